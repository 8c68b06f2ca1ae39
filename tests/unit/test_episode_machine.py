"""The episode state machine against DOMAIN.md section 1, row by row, then each transition in detail:
opening and ED conversion, transfer and its cancel, discharge, update, cancels, leave of absence,
class change, missing visit numbers and PV1, conflicts and determinism.

Messy feeds (out of order, resends), flags, LACE, attribution and merges are in
``test_episode_machine_messy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.unit.episode_builders import (
    HOSP,
    OTHER,
    T0,
    Run,
    adt,
    days,
    hours,
    new_state,
    run,
)
from transitions.clinical import ClinicalEvent
from transitions.episode import episode_id
from transitions.machine import apply
from transitions.model import Member
from transitions.state import Outcome, Rules

# --- DOMAIN.md section 1, one row each ---------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """Feed ``events``; the last one is the event under test."""

    events: tuple[ClinicalEvent, ...]
    outcome: Outcome
    emitted: tuple[str, ...]  # Change types of the last event
    episodes: tuple[str, ...]  # "kind/status" of every episode afterwards, oldest first


OPENED = ("EpisodeOpened", "CoordinatorAssigned")
A01 = adt("A01")
A03_LATER = adt("A03", at=T0 + days(2), disposition="01")

SECTION_1 = {
    "A04 class E opens ed": Row((adt("A04", cls="E"),), "applied", OPENED, ("ed/open",)),
    "A01 class E opens ed": Row((adt("A01", cls="E"),), "applied", OPENED, ("ed/open",)),
    "A01 class I opens inpatient": Row((adt("A01", cls="I"),), "applied", OPENED, ("inpatient/open",)),
    "A01 without class opens inpatient": Row((adt("A01", cls=None),), "applied", OPENED,
                                             ("inpatient/open",)),
    "A06 class I opens inpatient": Row((adt("A06", cls="I"),), "applied", OPENED, ("inpatient/open",)),
    "A06 after ED continues the ED episode": Row(
        (adt("A04", cls="E"), adt("A06", cls="I", at=T0 + hours(4))), "applied", ("EpisodeUpdated",),
        ("inpatient/open",)),
    "A01 class V opens observation": Row((adt("A01", cls="V"),), "applied", OPENED,
                                         ("observation/open",)),
    "A04 class V opens observation": Row((adt("A04", cls="V"),), "applied", OPENED,
                                         ("observation/open",)),
    "A01 service OBS opens observation": Row((adt("A01", cls="I", service="OBS"),), "applied", OPENED,
                                             ("observation/open",)),
    "A04 class O service OBS opens observation": Row((adt("A04", cls="O", service="OBS"),), "applied",
                                                     OPENED, ("observation/open",)),
    "A04 class O opens nothing": Row((adt("A04", cls="O"),), "ignored", (), ()),
    "A04 without class opens nothing": Row((adt("A04", cls=None),), "ignored", (), ()),
    "A05 pre-admission is a note only": Row((adt("A05", cls="I"),), "ignored", (), ()),
    "A28 unknown trigger ignored": Row((adt("A28"),), "ignored", (), ()),
    "A31 unknown trigger ignored": Row((adt("A31"),), "ignored", (), ()),
    "A02 transfer updates location": Row(
        (A01, adt("A02", location="5E^502^B", at=T0 + hours(5))), "applied", ("PatientTransferred",),
        ("inpatient/open",)),
    "A03 discharges": Row((A01, A03_LATER), "applied", ("PatientDischarged",), ("inpatient/discharged",)),
    "A07 reclassifies": Row((A01, adt("A07", cls="O", at=T0 + hours(3))), "applied", ("EpisodeUpdated",),
                            ("observation/open",)),
    "A08 patches": Row((A01, adt("A08", location="5E^502^B", at=T0 + hours(1))), "applied",
                       ("EpisodeUpdated",), ("inpatient/open",)),
    "A08 never opens": Row((adt("A08"),), "ignored", (), ()),
    "A11 cancels": Row((A01, adt("A11", at=T0 + hours(1))), "applied", ("EpisodeCancelled",),
                       ("inpatient/cancelled",)),
    "A12 reverts the transfer": Row(
        (A01, adt("A02", location="5E^502^B", at=T0 + hours(5)), adt("A12", location=None, at=T0 + hours(6))),
        "applied", ("EpisodeUpdated",), ("inpatient/open",)),
    "A13 reopens": Row((A01, A03_LATER, adt("A13", at=T0 + days(2) + hours(1))), "applied",
                       ("EpisodeReopened",), ("inpatient/open",)),
    "A21 pauses": Row((A01, adt("A21", at=T0 + days(1))), "applied", ("EpisodeUpdated",),
                      ("inpatient/open",)),
    "A22 resumes": Row((A01, adt("A21", at=T0 + days(1)), adt("A22", at=T0 + days(2))), "applied",
                       ("EpisodeUpdated",), ("inpatient/open",)),
    "A40 moves the prior identifier's episodes": Row(
        (adt("A01", mrn="MRN2"), adt("A40", None, mrn="MRN1", prior=("MRN2",), pv1=False)), "applied",
        ("EpisodesMerged",), ("inpatient/open",)),
    "PID-30 Y closes as expired": Row(
        (A01, adt("A08", at=T0 + days(1), died=True)), "applied", ("EpisodeClosed", "FlagRaised"),
        ("inpatient/closed",)),
    "PV1-36 20 closes as expired": Row(
        (A01, adt("A03", at=T0 + days(1), disposition="20")), "applied",
        ("PatientDischarged", "EpisodeClosed", "FlagRaised"), ("inpatient/closed",)),
}


@pytest.mark.parametrize("row", SECTION_1.values(), ids=SECTION_1.keys())
def test_domain_section_1(row: Row) -> None:
    result = run(*row.events)
    assert (result.last_outcome, tuple(result.last_types), tuple(result.summary())) == (
        row.outcome, row.emitted, row.episodes)


@pytest.mark.parametrize("trigger", ["A18", "A34", "A36", "A39"])
def test_every_merge_trigger_merges(trigger: str) -> None:
    result = run(adt("A01", mrn="MRN2"), adt(trigger, None, mrn="MRN1", prior=("MRN2",), pv1=False))
    assert (result.last_outcome, result.last_types) == ("applied", ["EpisodesMerged"])
    assert result.only.patient_identifier == "MRN1@HOSP"


def test_routing_uses_msh_9_not_evn_1() -> None:
    ev = adt("A04", cls="E")
    assert (ev.trigger, ev.action, ev.kind) == ("A04", "open", "ed")


# --- opening, and an ED visit that becomes a stay -----------------------------------------------


def test_opened_episode_carries_the_visit() -> None:
    result = run(adt("A01", "V1", location="4W^401^A", service="MED", admission_type="E",
                     diagnoses=("I50.9",), at=T0))
    ep = result.only
    assert (ep.id, ep.member_id, ep.patient_identifier) == (
        episode_id(HOSP, "V1", "M1", ""), "M1", "MRN1@HOSP")
    assert (ep.facility_key, ep.facility, ep.visit_numbers, ep.location) == (HOSP, HOSP, ("V1",), "4W^401^A")
    assert (ep.hospital_service, ep.admission_type, ep.diagnoses) == ("MED", "E", ("I50.9",))
    assert (ep.admitted_at, ep.coordinator_id, ep.coordinator_reason, ep.tier) == (T0, "C1", "roster", "low")
    assert result.state.visits == {(HOSP, "V1"): ep.id} == result.state.new_visits


@pytest.mark.parametrize("inpatient_visit", ["V1", "V2"], ids=["same visit number", "new visit number"])
def test_ed_visit_admitted_at_the_same_facility_is_one_episode(inpatient_visit: str) -> None:
    result = run(adt("A04", "V1", cls="E", at=T0), adt("A01", inpatient_visit, cls="I", at=T0 + hours(5)))
    ep = result.only
    assert (ep.kind, ep.kind_history, ep.status, ep.admitted_at) == ("inpatient", ("ed",), "open", T0)
    assert ep.visit_numbers == tuple(dict.fromkeys(("V1", inpatient_visit)))
    assert set(result.state.visits.values()) == {ep.id}
    assert result.last_types == ["EpisodeUpdated"]
    assert result.emitted[-1][0].detail["kind_from"] == "ed"


def test_ed_visit_then_admission_at_another_facility_is_a_second_episode() -> None:
    result = run(adt("A04", "V1", cls="E", at=T0),
                 adt("A01", "V1", cls="I", facility=OTHER, at=T0 + hours(5)))
    assert [(e.facility_key, e.kind, e.status) for e in result.episodes()] == [
        (HOSP, "ed", "open"), (OTHER, "inpatient", "open")]
    assert result.last_types == ["EpisodeOpened", "CoordinatorAssigned"]


def test_ed_visit_then_observation_then_inpatient() -> None:
    result = run(adt("A04", "V1", cls="E"), adt("A01", "V1", cls="V", at=T0 + hours(2)),
                 adt("A01", "V1", cls="I", at=T0 + hours(20)))
    assert (result.only.kind, result.only.kind_history) == ("inpatient", ("ed", "observation"))


def test_resent_admission_is_a_duplicate() -> None:
    result = run(adt("A01", "V1", control_id="X1"), adt("A01", "V1", control_id="X2"))
    assert (result.last_outcome, result.last_types, len(result.episodes())) == ("duplicate", [], 1)


# --- A02 transfer, A12 cancel transfer ----------------------------------------------------------


def test_transfer_within_the_unit_moves_the_patient() -> None:
    result = run(adt("A01", location="4W^401^A"), adt("A02", location="5E^502^B", at=T0 + hours(5)))
    ep, change = result.only, result.emitted[-1][0]
    assert (ep.location, ep.location_history, ep.kind) == ("5E^502^B", ("4W^401^A",), "inpatient")
    assert change.occurred_at == T0 + hours(5)
    assert {k: change.detail[k] for k in ("from_location", "to_location", "level_of_care",
                                          "notify_coordinator")} == {
        "from_location": "4W^401^A", "to_location": "5E^502^B", "level_of_care": None,
        "notify_coordinator": False}


@pytest.mark.parametrize(
    ("a02", "level", "kind", "facility"),
    [
        pytest.param(dict(service="PSY", location="PSY^10^A"), "psych", "inpatient", HOSP,
                     id="psych service"),
        pytest.param(dict(service="SNF", location="SNF^1^A"), "post_acute", "post_acute", HOSP,
                     id="SNF service"),
        pytest.param(dict(service="REHAB", location="R^1^A"), "post_acute", "post_acute", HOSP,
                     id="rehab service"),
        pytest.param(dict(loc_facility="HOSP-NORTH"), None, "inpatient", "HOSP-NORTH", id="other facility"),
        pytest.param(dict(loc_facility="SNF-ACME"), "post_acute", "post_acute", "SNF-ACME",
                     id="post-acute facility"),
    ],
)
def test_transfer_to_another_facility_or_level_of_care_notifies(
        a02: dict[str, str], level: str | None, kind: str, facility: str) -> None:
    rules = Rules(post_acute_facilities=frozenset({"SNF-ACME"}))
    result = run(adt("A01", service="MED"), adt("A02", at=T0 + days(3), rules=rules, **a02),  # type: ignore[arg-type]
                 state=new_state(rules=rules))
    change = result.emitted[-1][0]
    assert change.type == "PatientTransferred"
    assert (change.detail["level_of_care"], change.detail["notify_coordinator"]) == (level, True)
    assert (result.only.kind, result.only.facility) == (kind, facility)


def test_transfer_of_an_unseen_visit_opens_it() -> None:
    result = run(adt("A02", "V1", location="5E^502^B"))
    assert (result.only.kind, result.only.status, result.only.location) == ("inpatient", "open", "5E^502^B")


def test_transfer_to_the_same_place_is_a_duplicate() -> None:
    result = run(adt("A01"), adt("A02", at=T0 + hours(1)))
    assert (result.last_outcome, result.last_types) == ("duplicate", [])


@pytest.mark.parametrize("a12_location", [None, "4W^401^A"], ids=["A12 without PV1-3", "A12 with PV1-3"])
def test_cancel_transfer_reverts_the_location(a12_location: str | None) -> None:
    result = run(adt("A01", location="4W^401^A"), adt("A02", location="5E^502^B", at=T0 + hours(5)),
                 adt("A12", location=a12_location, at=T0 + hours(6)))
    assert (result.only.location, result.only.location_history) == ("4W^401^A", ())
    assert result.emitted[-1][0].detail["transfer_cancelled"] is True


@pytest.mark.parametrize("a12_location", [None, "4W^401^A"], ids=["A12 without PV1-3", "A12 with PV1-3"])
def test_cancel_transfer_with_nothing_to_revert_is_ignored(a12_location: str | None) -> None:
    result = run(adt("A01", location="4W^401^A"), adt("A12", location=a12_location, at=T0 + hours(6)))
    assert (result.last_outcome, result.last_types, result.only.location) == ("ignored", [], "4W^401^A")


def test_cancel_transfer_for_an_unknown_visit_is_ignored() -> None:
    assert run(adt("A12", "V9")).last_outcome == "ignored"


# --- A03 discharge ------------------------------------------------------------------------------


def test_discharge_uses_pv1_45_and_pv1_36_not_the_message_time() -> None:
    discharged = T0 + days(3)
    result = run(adt("A01", at=T0),
                 adt("A03", discharged=discharged, at=discharged + hours(2),
                     message_time=discharged + hours(5), disposition="06"))
    ep, change = result.only, result.emitted[-1][0]
    assert (ep.status, ep.discharged_at, ep.disposition) == ("discharged", discharged, "06")
    assert (change.type, change.occurred_at, change.detail["corrected"]) == (
        "PatientDischarged", discharged, False)
    assert ep.flags == ()


def test_discharge_without_pv1_45_uses_evn_6() -> None:
    result = run(adt("A01"), adt("A03", discharged=None, occurred=T0 + days(2), at=T0 + days(2) + hours(4)))
    assert result.only.discharged_at == T0 + days(2)


@pytest.mark.parametrize("disposition", ["07", "7"])
def test_left_against_medical_advice_flags(disposition: str) -> None:
    result = run(adt("A01"), adt("A03", at=T0 + days(1), disposition=disposition))
    assert (result.only.disposition, result.only.flag_names) == ("07", ("left_ama",))
    assert result.last_types == ["PatientDischarged", "FlagRaised"]


@pytest.mark.parametrize(
    ("a03", "disposition"),
    [
        pytest.param(dict(disposition="20"), "20", id="PV1-36 20"),
        pytest.param(dict(disposition="01", died=True), "01", id="PID-30 Y"),
    ],
)
def test_death_closes_the_episode_as_expired(a03: dict[str, object], disposition: str) -> None:
    result = run(adt("A01"), adt("A03", at=T0 + days(1), **a03))  # type: ignore[arg-type]
    ep = result.only
    assert (ep.status, ep.close_reason, ep.disposition, ep.flag_names) == (
        "closed", "expired", disposition, ("expired",))
    assert ep.discharged_at == T0 + days(1)
    closed = next(c for c in result.emitted[-1] if c.type == "EpisodeClosed")
    assert closed.detail["notify"] == ["coordinator", "supervisor"]


def test_death_on_an_unseen_visit_closes_the_episode_it_opens() -> None:
    result = run(adt("A03", "V1", at=T0 + days(1), disposition="20"))
    ep = result.only
    assert (ep.status, ep.close_reason, ep.flag_names) == ("closed", "expired", ("expired",))
    assert "EpisodeClosed" in result.last_types


def test_death_without_a_visit_closes_every_open_episode() -> None:
    result = run(adt("A04", "V1", cls="E"), adt("A01", "V2", facility=OTHER),
                 adt("A08", None, facility="ELSEWHERE", died=True, at=T0 + hours(4)))
    assert sorted(result.summary()) == ["ed/closed", "inpatient/closed"]


def test_death_on_an_old_visit_closes_the_open_episodes_too() -> None:
    result = run(adt("A01", "V1"), adt("A03", "V1", at=T0 + days(2)),
                 adt("A04", "V2", cls="E", facility=OTHER, at=T0 + days(30)),
                 adt("A08", "V1", died=True, at=T0 + days(31)))
    assert result.summary() == ["inpatient/closed", "ed/closed"]
    assert [c.type for c in result.emitted[-1]] == ["EpisodeClosed", "FlagRaised"] * 2


def test_discharge_of_a_cancelled_visit_is_ignored() -> None:
    result = run(adt("A01"), adt("A11", at=T0 + hours(1)), adt("A03", at=T0 + days(1)))
    assert (result.last_outcome, result.only.status) == ("ignored", "cancelled")


# --- A08 update ---------------------------------------------------------------------------------


def test_update_patches_location_and_diagnoses() -> None:
    result = run(adt("A01", location="4W^401^A", diagnoses=("I10",)),
                 adt("A08", location="5E^502^B", diagnoses=("F32.9",), at=T0 + hours(2)))
    assert (result.only.location, result.only.diagnoses) == ("5E^502^B", ("F32.9", "I10"))
    assert result.emitted[-1][0].detail["fields"] == ["diagnoses", "location"]


@pytest.mark.parametrize("visit", ["V1", None], ids=["with PV1-19", "without PV1-19"])
def test_update_never_opens(visit: str | None) -> None:
    result = run(adt("A08", visit, cls="E"))
    assert (result.last_outcome, result.state.episodes, result.state.changes) == ("ignored", {}, [])


def test_update_after_discharge_patches_the_disposition_without_reopening() -> None:
    result = run(adt("A01"), adt("A03", at=T0 + days(2), disposition="01"),
                 adt("A08", at=T0 + days(2) + hours(3), disposition="06", discharged=T0 + days(2)))
    assert (result.only.status, result.only.disposition, result.last_types) == (
        "discharged", "06", ["EpisodeUpdated"])


def test_update_of_an_open_episode_does_not_discharge_it() -> None:
    result = run(adt("A01"), adt("A08", discharged=T0 + days(1), disposition="01", at=T0 + hours(2)))
    assert (result.only.status, result.only.discharged_at, result.last_outcome) == ("open", None, "duplicate")


# --- A11 cancel admit/visit ---------------------------------------------------------------------


def test_cancel_admit_cancels_the_visit() -> None:
    cancel = adt("A11", at=T0 + hours(1))
    result = run(adt("A01"), cancel)
    ep = result.only
    assert (ep.status, ep.cancelled_at, result.last_types) == (
        "cancelled", T0 + hours(1), ["EpisodeCancelled"])
    assert result.emitted[-1][0].detail["previous_status"] == "open"
    assert run(adt("A01"), cancel, adt("A11", at=T0 + hours(2))).last_outcome == "duplicate"


def test_cancel_of_the_admission_of_an_ed_visit_goes_back_to_ed() -> None:
    result = run(adt("A04", "V1", cls="E"), adt("A01", "V2", cls="I", at=T0 + hours(4)),
                 adt("A11", "V2", cls="I", at=T0 + hours(5)))
    ep = result.only
    assert (ep.kind, ep.kind_history, ep.status) == ("ed", (), "open")
    assert result.last_types == ["EpisodeUpdated"]


def test_cancel_of_the_ed_visit_number_cancels_the_whole_episode() -> None:
    result = run(adt("A04", "V1", cls="E"), adt("A01", "V2", cls="I", at=T0 + hours(4)),
                 adt("A11", "V1", cls="E", at=T0 + hours(5)))
    assert result.summary() == ["inpatient/cancelled"]


# --- A13 cancel discharge -----------------------------------------------------------------------


def test_cancel_discharge_reopens_without_readmission_and_drops_left_ama() -> None:
    result = run(adt("A01"), adt("A03", at=T0 + days(1), disposition="07"),
                 adt("A13", at=T0 + days(1) + hours(1)))
    ep, change = result.only, result.emitted[-1][0]
    assert (ep.status, ep.discharged_at, ep.disposition, ep.lace, ep.flags) == ("open", None, "", None, ())
    assert (change.type, change.detail["readmission"]) == ("EpisodeReopened", False)


def test_cancel_discharge_of_an_open_episode_is_a_duplicate() -> None:
    result = run(adt("A01"), adt("A13", at=T0 + hours(3)))
    assert (result.last_outcome, result.last_types) == ("duplicate", [])


# --- A21 / A22 leave of absence, A07 class change -----------------------------------------------


def test_leave_of_absence_pauses_and_return_resumes() -> None:
    result = run(adt("A01"), adt("A21", at=T0 + days(1)))
    assert result.only.paused is True
    result.feed(adt("A21", at=T0 + days(1) + hours(1)))
    assert (result.last_outcome, result.last_types) == ("duplicate", [])
    result.feed(adt("A22", at=T0 + days(2)))
    assert (result.only.paused, result.last_outcome) == (False, "applied")
    result.feed(adt("A22", at=T0 + days(2) + hours(1)))
    assert result.last_outcome == "duplicate"


def test_class_change_reclassifies_inpatient_to_observation() -> None:
    result = run(adt("A01", cls="I"), adt("A07", cls="O", at=T0 + hours(6)))
    ep = result.only
    assert (ep.kind, ep.kind_history, ep.patient_class) == ("observation", ("inpatient",), "O")
    assert result.emitted[-1][0].detail == {"kind_from": "inpatient", "kind_to": "observation",
                                            "trigger": "A07"}


# --- missing PV1-19, missing PV1 ----------------------------------------------------------------


def test_events_without_visit_number_match_the_open_episode_at_the_facility() -> None:
    result = run(adt("A04", None, cls="E"), adt("A08", None, cls="E", location="ED^9", at=T0 + hours(1)),
                 adt("A03", None, cls="E", at=T0 + hours(4)))
    assert (result.only.kind, result.only.status, result.only.location) == ("ed", "discharged", "ED^9")
    assert result.outcomes == ["applied", "applied", "applied"]


def test_second_registration_without_visit_number_is_a_duplicate() -> None:
    result = run(adt("A04", None, cls="E"), adt("A04", None, cls="E", at=T0 + hours(1)))
    assert (result.last_outcome, len(result.episodes())) == ("duplicate", 1)


def test_registration_without_visit_number_after_the_last_visit_ended_opens_a_new_one() -> None:
    result = run(adt("A04", None, cls="E"), adt("A03", None, cls="E", at=T0 + hours(4)),
                 adt("A04", None, cls="E", at=T0 + days(3)))
    assert result.summary() == ["ed/discharged", "ed/open"]


def test_registration_without_visit_number_at_another_facility_opens_a_new_one() -> None:
    result = run(adt("A04", None, cls="E"), adt("A04", None, cls="E", facility=OTHER, at=T0 + hours(1)))
    assert [e.facility_key for e in result.episodes()] == [HOSP, OTHER]


@pytest.mark.parametrize(
    ("event", "admitted"),
    [
        pytest.param(adt("A01", "V1", pv1=False, occurred=T0 - hours(1), at=T0), T0 - hours(1), id="EVN-6"),
        pytest.param(adt("A01", "V1", pv1=False, evn=False, message_time=T0), T0, id="MSH-7"),
    ],
)
def test_admission_without_pv1_opens_inpatient_at_the_event_time(
        event: ClinicalEvent, admitted: object) -> None:
    result = run(event)
    ep = result.only
    assert (ep.kind, ep.status, ep.admitted_at, ep.visit_numbers, ep.location) == (
        "inpatient", "open", admitted, (), "")


# --- conflicts, determinism ---------------------------------------------------------------------


def test_visit_number_of_another_members_episode_is_a_conflict() -> None:
    other = run(adt("A01", "V7", mrn="MRN9"), state=new_state(Member(member_id="M9", coordinator_id="C1")))
    theirs = other.only
    state = new_state()
    state.episodes[theirs.id] = theirs
    state.visits[(HOSP, "V7")] = theirs.id
    result = run(adt("A03", "V7", at=T0 + days(1)), state=state)
    assert (result.last_outcome, state.changes, state.changed) == ("conflict", [], set())
    assert state.episodes == {theirs.id: theirs}


def _sequence() -> list[ClinicalEvent]:
    return [
        adt("A04", "V1", cls="E", at=T0), adt("A01", "V2", at=T0 + hours(5), admission_type="E"),
        adt("A02", "V2", location="5E^1", at=T0 + days(1)),
        adt("A08", "V2", diagnoses=("I50.9",), at=T0 + days(2)),
        adt("A03", "V2", at=T0 + days(4), disposition="07"), adt("A04", None, cls="E", at=T0 + days(10)),
        adt("A03", None, cls="E", at=T0 + days(10) + hours(3)), adt("A01", "V3", at=T0 + days(20)),
        adt("A11", "V4", at=T0 + days(21)), adt("A21", "V3", at=T0 + days(22)),
    ]


def test_same_sequence_gives_the_same_episodes_and_changes() -> None:
    events = _sequence()
    first, second = Run(new_state()).feed(*events), Run(new_state()).feed(*events)
    assert first.state.episodes == second.state.episodes
    assert first.state.changes == second.state.changes
    assert (first.outcomes, first.state.visits) == (second.outcomes, second.state.visits)
    assert first.state.member == second.state.member


def test_episode_ids_are_deterministic() -> None:
    with_visit = run(adt("A01", "V1")).only
    assert with_visit.id == episode_id(HOSP, "V1", "M1", "anything")
    ev = adt("A04", None, cls="E")
    assert run(ev).only.id == episode_id(HOSP, None, "M1", ev.event_id) == run(ev).only.id


def test_replaying_a_whole_sequence_changes_nothing() -> None:
    events = [ev for ev in _sequence() if ev.visit_number]  # without PV1-19 a resend is ambiguous
    result = Run(new_state()).feed(*events)
    episodes = dict(result.state.episodes)
    before = len(result.state.changes)
    for ev in events:
        assert apply(result.state, ev) in ("duplicate", "ignored"), ev.trigger
    assert (result.state.episodes, len(result.state.changes)) == (episodes, before)
