"""The planner, table-driven: what each episode event does to tasks (create, cancel, move,
raise), with deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from followup.assignment import Workload
from followup.calendar import ProgramCalendar
from followup.planner import PlanContext, plan
from followup.rules_loader import default_rules
from followup.task import Task
from schemas.episode_event import EpisodeEvent
from transitions.model import StaffMember

AT = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # a Monday
STAFF = {"C1": StaffMember("C1", role="care_coordinator", team="n", supervisor_id="S1"),
         "S1": StaffMember("S1", role="supervisor", team="n")}


def ctx() -> PlanContext:
    return PlanContext(default_rules(), ProgramCalendar("America/New_York"), STAFF, Workload(dict))


def event(type_: str, n: int = 0, episode: str = "ep-1", member: str = "M1",
          **changes: Any) -> EpisodeEvent:
    snapshot: dict[str, Any] = {
        "id": episode, "member_id": member, "patient_identifier": "1001@GENHOSP",
        "kind": "inpatient", "status": "discharged", "facility": "GENHOSP",
        "facility_key": "GENHOSP", "tier": "low", "coordinator_id": "C1",
        "admitted_at": AT - timedelta(days=3), "discharged_at": AT, "disposition": "01"}
    snapshot.update(changes.pop("snap", {}))
    detail = changes.pop("detail", {"disposition": "01", "corrected": False})
    return EpisodeEvent.model_validate({
        "event_id": f"E{n}#0", "type": type_, "member_id": member, "episode_id": episode,
        "occurred_at": AT, "source_event_id": f"E{n}", "summary": type_, "episode": snapshot,
        "detail": detail, **changes})


def discharge_tasks(**snap: Any) -> list[Task]:
    return list(plan(event("PatientDischarged", snap=snap), [], ctx()).changed.values())


def test_a_discharge_home_plans_the_community_tasks_with_stable_ids() -> None:
    first = {t.type: t for t in discharge_tasks()}
    assert {"post_discharge_contact", "obtain_discharge_information", "schedule_follow_up_visit",
            "face_to_face_visit", "medication_reconciliation", "community_supports"} <= set(first)
    again = {t.type: t for t in discharge_tasks()}
    assert {k: v.id for k, v in first.items()} == {k: v.id for k, v in again.items()}
    assert all(t.assignee_id == "C1" and t.status == "open" for t in first.values())


def test_replanning_with_the_tasks_present_creates_nothing() -> None:
    made = discharge_tasks()
    assert plan(event("PatientDischarged"), made, ctx()).changed == {}


@pytest.mark.parametrize(("cause", "detail", "cancelled"), [
    ("EpisodeReopened", {"reason": "cancel discharge (A13)"}, "all discharge tasks"),
    ("EpisodeCancelled", {"reason": "cancel admit/visit (A11)"}, "everything"),
    ("EpisodeClosed", {"reason": "expired"}, "outreach only"),
], ids=["A13 voids the discharge tasks", "A11 voids everything", "death cancels outreach"])
def test_voiding_events(cause: str, detail: dict[str, Any], cancelled: str) -> None:
    made = discharge_tasks()
    result = plan(event(cause, 1, detail=detail), made, ctx())
    gone = {t.type for t in result.changed.values() if t.status == "cancelled"}
    outreach = {t.type for t in made if t.outreach}
    if cancelled == "outreach only":
        assert gone == outreach and gone
    else:
        assert gone == {t.type for t in made}
    assert all(cause in t.cancel_reason for t in result.changed.values() if t.status == "cancelled")


def test_a_readmission_raises_the_members_open_tasks() -> None:
    made = discharge_tasks()
    result = plan(event("FlagRaised", 2, detail={"flag": "readmission_30d"}), made, ctx())
    assert {t.priority for t in result.changed.values()} == {"high"}
    assert {c.type for c in result.changes} == {"TaskReprioritized"}


def test_tasks_of_a_readmission_episode_start_one_step_up() -> None:
    assert {t.priority for t in discharge_tasks(flags=("readmission_30d",))} >= {"high"}


def test_a_merge_moves_the_folded_episodes_tasks() -> None:
    made = discharge_tasks()
    merged = event("EpisodesMerged", 3, episode="ep-kept", member="M9",
                   detail={"merged_episode_id": "ep-1"})
    moved = plan(merged, made, ctx()).changed.values()
    assert {(t.episode_id, t.member_id) for t in moved} == {("ep-kept", "M9")}


def test_an_opted_out_member_gets_no_outreach_but_the_rest() -> None:
    result = plan(event("PatientDischarged", snap={"opted_out": True}), [], ctx())
    made = list(result.changed.values())
    assert made and not any(t.outreach for t in made)
    assert "post_discharge_contact" in result.suppressed
