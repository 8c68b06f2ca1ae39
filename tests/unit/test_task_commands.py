"""The escalation ladder with a moved clock, and the task commands (claim, complete, reassign)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from followup.commands import CommandError, check_outcome, claim, complete, reassign
from followup.ladder import fire_due
from followup.task import Step, Task, task_id
from transitions.model import StaffMember

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DUE = T0 + timedelta(days=2)
LADDER = (Step(T0 + timedelta(days=1), "remind", 0, "assignee"),
          Step(DUE, "escalate", 1, "supervisor"),
          Step(DUE + timedelta(days=1), "escalate", 2, "program_manager"))
TASK = Task(task_id("post_discharge_contact", "E1#0"), "ep-1", "M1", "post_discharge_contact",
            "post_discharge_contact", "Post-discharge contact", "open", "normal", T0, DUE,
            ("care_coordinator",), assignee_id="C1", assignee_role="care_coordinator",
            steps=LADDER)
C1 = StaffMember("C1", role="care_coordinator", team="n", supervisor_id="S1")
C2 = StaffMember("C2", role="care_coordinator", team="n", supervisor_id="S1")
A1 = StaffMember("A1", role="allied", team="n")
S1 = StaffMember("S1", role="supervisor", team="n")


@pytest.mark.parametrize(("now", "fired", "level", "next_at"), [
    (T0 + timedelta(hours=23), [], 0, LADDER[0].at),
    (T0 + timedelta(days=1), ["TaskReminded"], 0, DUE),
    (DUE, ["TaskReminded", "TaskEscalated"], 1, LADDER[2].at),
    (DUE + timedelta(days=5), ["TaskReminded", "TaskEscalated", "TaskEscalated"], 2, None),
], ids=["before half", "at half: reminder", "at due: level 1", "down for days: every step once"])
def test_the_ladder_fires_each_due_step_once(now: datetime, fired: list[str], level: int,
                                             next_at: datetime | None) -> None:
    task, changes = fire_due(TASK, now)
    assert [c.type for c in changes] == fired
    assert [c.at for c in changes] == [s.at for s in LADDER[:len(fired)]]  # scheduled times
    assert (task.escalation_level, task.next_step_at) == (level, next_at)
    again, more = fire_due(task, now)
    assert more == [] and again == task


def test_a_done_task_fires_nothing() -> None:
    assert fire_due(replace(TASK, status="done"), DUE + timedelta(days=9)) == (
        replace(TASK, status="done"), [])


def test_task_ids_are_deterministic() -> None:
    assert task_id("r", "E1#0") == task_id("r", "E1#0") != task_id("r", "E1#1")


def test_claim_by_the_assignee_and_by_a_colleague() -> None:
    mine, change = claim(TASK, C1, T0)
    assert (mine.status, mine.assignee_id, change.type) == ("claimed", "C1", "TaskClaimed")
    theirs, _ = claim(TASK, C2, T0)
    assert (theirs.assignee_id, theirs.assignment_reason) == ("C2", "claimed by C2")
    with pytest.raises(CommandError, match="already claimed"):
        claim(mine, C1, T0)


def test_a_role_the_rule_does_not_allow_may_not_claim_or_take_it() -> None:
    with pytest.raises(CommandError, match="A1 is allied; task type post_discharge_contact may be done"):
        claim(TASK, A1, T0)
    with pytest.raises(CommandError, match="A1 is allied"):
        reassign(TASK, S1, A1, "cover", T0)


def test_reassign_by_the_assignee_or_a_supervisor_only() -> None:
    moved, change = reassign(TASK, S1, C2, "C1 at training", T0)
    assert (moved.assignee_id, moved.status) == ("C2", "open")
    assert change.detail == {"from": "C1", "to": "C2", "reason": "C1 at training"}
    with pytest.raises(CommandError, match="only its assignee, a supervisor"):
        reassign(TASK, C2, C2, "", T0)


CONTACT_OK: list[dict[str, Any]] = [
    {"attempts": [{"at": "2026-03-03T10:00:00-05:00", "result": "reached"}]},
    {"attempts": [{"at": "2026-03-03T10:00:00-05:00", "result": "no_answer"},
                  {"at": "2026-03-03T15:00:00-05:00", "result": "left_message"}]},
]
CONTACT_BAD: list[tuple[dict[str, Any], str]] = [
    ({}, "attempts: log each contact attempt"),
    ({"attempts": [{"at": "2026-03-03T10:00:00-05:00", "result": "no_answer"}]},
     "log at least 2 attempts"),
    ({"attempts": [{"at": "yesterday", "result": "reached"}]}, r"attempts\[1\].at"),
    ({"attempts": [{"at": "2026-03-03T10:00:00", "result": "reached"}]}, "give the offset"),
    ({"attempts": [{"at": "2026-03-03T10:00:00-05:00", "result": "maybe"}]}, r"attempts\[1\].result"),
]


@pytest.mark.parametrize("outcome", CONTACT_OK, ids=["reached once", "two attempts"])
def test_contact_outcomes_that_complete(outcome: dict[str, Any]) -> None:
    done, change = complete(TASK, C1, outcome, "attempts", T0)
    assert done.status == "done" and done.outcome["completed_by"] == "C1"
    assert change.detail["outcome"]["attempts"] == check_outcome("attempts", outcome)["attempts"]


@pytest.mark.parametrize(("outcome", "message"), CONTACT_BAD,
                         ids=["none", "one failed attempt", "bad time", "no offset", "bad result"])
def test_contact_outcomes_that_do_not(outcome: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        complete(TASK, C1, outcome, "attempts", T0)


def test_visit_outcome_needs_the_visit_time() -> None:
    assert check_outcome("visit", {"visit_at": "2026-03-09T09:30:00-05:00"}) == {
        "visit_at": "2026-03-09T09:30:00-05:00"}
    with pytest.raises(CommandError, match="visit_at"):
        check_outcome("visit", {"note": "called the clinic"})


def test_a_closed_task_takes_no_command() -> None:
    with pytest.raises(CommandError, match="is cancelled") as info:
        complete(replace(TASK, status="cancelled"), C1, {}, "done", T0)
    assert info.value.conflict
