"""The episode machine on messy feeds: messages out of order, resends and corrections, early
cancels; the history flags (readmission, frequent ED, stale), LACE at discharge, attribution at
admission and discharge, patient merges; and a property test over random sequences."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.episode_builders import (
    C1,
    C2,
    HOSP,
    MEMBER,
    OTHER,
    S1,
    T0,
    Run,
    adt,
    days,
    hours,
    new_state,
    run,
)
from transitions.clinical import ClinicalEvent
from transitions.episode import Episode
from transitions.flags import stale_flag
from transitions.machine import apply
from transitions.model import Member, MemberIdentifier
from transitions.state import PatientState, Rules

# --- out of order, resends, corrections ---------------------------------------------------------


def test_discharge_before_admission_then_the_late_admission() -> None:
    discharged = T0 + days(3)
    result = run(adt("A03", "V1", admitted=None, at=discharged, disposition="01"))
    assert (result.only.status, result.only.discharged_at, result.only.admitted_at) == (
        "discharged", discharged, None)
    assert result.last_types == ["EpisodeOpened", "CoordinatorAssigned", "PatientDischarged"]
    assert result.only.lace is None  # no length of stay without PV1-44

    result.feed(adt("A01", "V1", admitted=T0, at=discharged + hours(1)))
    ep = result.only
    assert (ep.status, ep.admitted_at, ep.discharged_at, ep.disposition) == (
        "discharged", T0, discharged, "01")
    assert (result.last_outcome, result.last_types) == ("applied", ["EpisodeUpdated"])
    assert ep.lace is not None and ep.lace["length_of_stay_days"] == 3
    result.feed(adt("A01", "V1", admitted=T0, at=discharged + hours(2)))
    assert (result.last_outcome, len(result.episodes(all_=True))) == ("duplicate", 1)


def test_discharge_with_pv1_44_before_admission_then_the_late_admission_is_a_duplicate() -> None:
    result = run(adt("A03", "V1", admitted=T0, at=T0 + days(3)),
                 adt("A01", "V1", admitted=T0, at=T0 + days(3) + hours(1)))
    assert (result.last_outcome, result.only.status, result.only.admitted_at) == (
        "duplicate", "discharged", T0)


def test_a_visit_number_filled_late_is_adopted_and_a_resend_finds_it() -> None:
    """Regression (review): an ED registration without PV1-19, then its discharge with one:
    the episode never recorded the number, so the resent A03 opened a second episode for the
    visit, and an A13 or A08 of the visit was ignored."""
    a03 = dict(cls="E", at=T0 + hours(5), disposition="01")
    result = run(adt("A04", None, cls="E", at=T0), adt("A03", "V7", **a03),  # type: ignore[arg-type]
                 adt("A03", "V7", **a03))  # type: ignore[arg-type]
    assert (result.last_outcome, len(result.episodes(all_=True))) == ("duplicate", 1)
    assert result.only.visit_numbers == ("V7",) and result.only.status == "discharged"
    result.feed(adt("A13", "V7", cls="E", at=T0 + hours(6)))
    assert (result.last_outcome, result.only.status) == ("applied", "open")
    assert result.state.new_visits == {(HOSP, "V7"): result.only.id}  # written to the index


def test_a_resent_cancel_of_the_admission_leaves_the_ed_visit_going_on() -> None:
    """Regression (review): A11 for the admission of an ED visit that became a stay sends the
    visit back to ED; the same A11 resent cancelled the whole visit."""
    result = run(adt("A04", "V1", cls="E", at=T0), adt("A01", "V2", cls="I", at=T0 + hours(3)),
                 adt("A11", "V2", cls="I", at=T0 + hours(4)))
    assert (result.only.kind, result.only.status) == ("ed", "open")
    result.feed(adt("A11", "V2", cls="I", at=T0 + hours(4)))
    assert (result.last_outcome, result.only.kind, result.only.status) == ("duplicate", "ed", "open")
    result.feed(adt("A11", "V1", cls="E", at=T0 + hours(5)))  # the ED visit itself: cancelled
    assert result.episodes(all_=True)[0].status == "cancelled"


def test_a_resent_discharge_without_pv1_45_keeps_the_known_discharge_time() -> None:
    """Regression (review): the resend's message time replaced PV1-45 (and counted as a
    correction), so the result depended on which of the two arrived last."""
    result = run(adt("A01", "V1", at=T0),
                 adt("A03", "V1", at=T0 + days(2) + hours(3), discharged=T0 + days(2), disposition="01"),
                 adt("A03", "V1", at=T0 + days(2) + hours(3), discharged=None, disposition="01"))
    assert (result.last_outcome, result.only.discharged_at) == ("duplicate", T0 + days(2))


def test_an_admission_continuing_an_ed_visit_known_from_its_discharge_sets_the_admit_time() -> None:
    """Regression (review): A03 of an ED visit first (no PV1-44), then the admission under the
    same visit number: the stay had no admission time, so no readmission flag and no LACE,
    and the resent A01 then filled it in (not a duplicate)."""
    earlier = [adt("A01", "V1", cls="I", at=T0 - days(14)),
               adt("A03", "V1", cls="I", at=T0 - days(10), disposition="01")]
    a01 = adt("A01", "V2", cls="I", at=T0 + hours(1))
    result = run(*earlier, adt("A03", "V2", cls="E", at=T0, admitted=None, disposition="09"), a01)
    stay = max(result.episodes(all_=True), key=lambda e: e.admitted_at or T0)
    assert (stay.kind, stay.status, stay.admitted_at) == ("inpatient", "open", T0 + hours(1))
    assert "readmission_30d" in stay.flag_names
    result.feed(adt("A01", "V2", cls="I", at=T0 + hours(1)))
    assert result.last_outcome == "duplicate"


def test_a_discharge_during_a_leave_of_absence_ends_the_leave() -> None:
    """Regression (review): discharged while on leave (A21), the episode stayed paused, and
    the A22 after the discharge was ignored."""
    result = run(adt("A01", "V1", at=T0), adt("A21", "V1", at=T0 + hours(5)),
                 adt("A03", "V1", at=T0 + days(1), disposition="01"))
    assert (result.only.status, result.only.paused) == ("discharged", False)


@pytest.mark.parametrize("pv1_44", [T0, T0 + hours(4)], ids=["ED arrival", "decision to admit"])
def test_an_admission_after_the_ed_discharge_with_an_earlier_pv1_44_continues_as_a_stay(
        pv1_44: datetime) -> None:
    """Regression (review): many feeds put the ED arrival or the decision to admit in PV1-44,
    before the ED part's A03; the A01 recorded after that A03 was taken for a duplicate and
    the stay never existed."""
    result = run(adt("A04", "V1", cls="E", at=T0),
                 adt("A03", "V1", cls="E", at=T0 + hours(5), disposition="09"),
                 adt("A01", "V1", cls="I", at=T0 + hours(6), admitted=pv1_44))
    ep = result.only
    assert (result.last_outcome, ep.kind, ep.status, ep.kind_history) == (
        "applied", "inpatient", "open", ("ed",))
    assert result.last_types == ["EpisodeReopened", "EpisodeUpdated"]


def test_an_admission_recorded_before_the_discharge_that_came_first_makes_it_the_stays() -> None:
    """The A01 (recorded at +3 h) reaches the service after the A03 (+5 h, home): the visit
    was a stay and the discharge the stay's. The kind becomes inpatient and the discharge is
    told again as the stay's, uncorrected, so the stay's follow-up is planned."""
    result = run(adt("A04", "V1", cls="E", at=T0),
                 adt("A03", "V1", cls="E", at=T0 + hours(5), disposition="01"),
                 adt("A01", "V1", cls="I", at=T0 + hours(3)))
    ep = result.only
    assert (ep.kind, ep.status, ep.discharged_at, ep.kind_history) == (
        "inpatient", "discharged", T0 + hours(5), ("ed",))
    assert ep.lace is not None
    assert result.last_types == ["EpisodeUpdated", "PatientDischarged"]
    told = result.emitted[-1][-1]
    assert (told.detail["kind"], told.detail["corrected"]) == ("inpatient", False)
    result.feed(adt("A01", "V1", cls="I", at=T0 + hours(3)))
    assert result.last_outcome == "duplicate"


def test_a_transfer_without_pv1_3_moves_nobody_to_another_facility() -> None:
    """Regression (review): an A02 missing PV1-3 blanked the location and, its facility read
    from MSH-4, told the coordinator of a move to another facility."""
    result = run(adt("A01", "V1", at=T0, location="4W^401^A", loc_facility="MAIN"),
                 adt("A02", "V1", at=T0 + hours(5), location=None))
    assert result.last_outcome == "duplicate"
    assert (result.only.location, result.only.facility) == ("4W^401^A", "MAIN")


def test_a12_takes_the_patient_back_to_the_facility_and_level_of_care_before_the_transfer() -> None:
    """Regression (review): an A12 put the location back but left the facility (an A02 to
    another facility) and the level of care (an A02 into a skilled nursing unit)."""
    moved = run(adt("A01", "V1", at=T0, location="4W^401^A", loc_facility="MAIN"),
                adt("A02", "V1", at=T0 + hours(5), location="ICU^1^A", loc_facility="NORTH"),
                adt("A12", "V1", at=T0 + hours(6), location=None))
    assert (moved.only.location, moved.only.facility) == ("4W^401^A", "MAIN")
    assert moved.emitted[-1][0].detail["to_facility"] == "MAIN"
    snf = run(adt("A01", "V1", at=T0, location="4W^401^A", service="MED"),
              adt("A02", "V1", at=T0 + hours(5), location="SNF^1^A", service="SNF"))
    assert snf.only.kind == "post_acute"
    snf.feed(adt("A12", "V1", at=T0 + hours(6), location=None))
    ep = snf.only
    assert (ep.kind, ep.hospital_service, ep.location, ep.kind_history) == (
        "inpatient", "MED", "4W^401^A", ())
    snf.feed(adt("A12", "V1", at=T0 + hours(7), location=None))  # nothing left to cancel
    assert snf.last_outcome == "ignored"


@pytest.mark.parametrize("second_loc_facility, a12_loc_facility, service", [
    ("NORTH", "NORTH", None),   # the A12 names the facility it goes back to
    ("NORTH", None, None),      # it does not (PV1-3.4 empty): MSH-4 is not a move
    ("MAIN", "MAIN", "SNF"),    # a level-of-care change, then a move within it
])
def test_a_resent_a12_after_an_earlier_transfer_changed_facility_is_a_duplicate(
        second_loc_facility: str, a12_loc_facility: str | None, service: str | None) -> None:
    """Regression (review): 4W -> 5E (another facility or level of care) -> 6N, then an A12 back
    to 5E sent twice: the second A12 compared the facility and level of care of the transfer
    before (4W's) with the current ones, saw a change, and took the patient back to 4W."""
    result = run(adt("A01", "V1", at=T0, location="4W^401^A", loc_facility="MAIN", service="MED"),
                 adt("A02", "V1", at=T0 + hours(2), location="5E^2^A", loc_facility=second_loc_facility,
                     service=service),
                 adt("A02", "V1", at=T0 + hours(4), location="6N^3^A", loc_facility=second_loc_facility,
                     service=service))
    moved = (result.only.facility, result.only.kind)
    a12 = dict(at=T0 + hours(6), location="5E^2^A", loc_facility=a12_loc_facility, service=service)
    result.feed(adt("A12", "V1", **a12))  # type: ignore[arg-type]
    assert result.last_outcome == "applied"
    ep = result.only
    assert (ep.location, ep.facility, ep.kind, ep.location_history) == (
        "5E^2^A", moved[0], moved[1], ("4W^401^A",))
    result.feed(adt("A12", "V1", **a12))  # type: ignore[arg-type]
    assert result.last_outcome == "duplicate"
    assert result.only == ep
    # cancelling the remaining transfer still works, and takes back what it changed
    result.feed(adt("A12", "V1", at=T0 + hours(7), location="4W^401^A", loc_facility="MAIN",
                    service="MED"))
    assert (result.last_outcome, result.only.location, result.only.facility, result.only.kind) == (
        "applied", "4W^401^A", "MAIN", "inpatient")


@pytest.mark.parametrize("trigger, status", [("A03", "discharged"), ("A11", "cancelled")])
@pytest.mark.parametrize("pv1_45", [True, False])
def test_a_resend_without_a_visit_number_leaves_the_other_open_visit_alone(
        trigger: str, status: str, pv1_45: bool) -> None:
    """Regression (review, resend fuzzer): two visits open at one facility, then an A03 or A11
    without PV1-19 sent twice: the first ends the latest visit, the resend (open ones first)
    ended the other one too."""
    result = run(adt("A01", "V1", at=T0), adt("A04", "V2", cls="E", at=T0 + hours(1)))
    ending = dict(at=T0 + hours(5), disposition="01" if trigger == "A03" else None,
                  discharged=T0 + hours(5) if pv1_45 else None)
    result.feed(adt(trigger, None, **ending))  # type: ignore[arg-type]
    assert result.last_outcome == "applied"
    ended = {e.visit_numbers: e.status for e in result.episodes(all_=True)}
    assert ended == {("V1",): "open", ("V2",): status}
    result.feed(adt(trigger, None, **ending))  # type: ignore[arg-type]
    assert result.last_outcome == "duplicate"
    assert {e.visit_numbers: e.status for e in result.episodes(all_=True)} == ended
    # a later one without a visit number is about the visit still open
    result.feed(adt(trigger, None, **dict(ending, at=T0 + hours(8),  # type: ignore[arg-type]
                                          discharged=T0 + hours(8) if pv1_45 else None)))
    assert result.last_outcome == "applied"
    assert {e.status for e in result.episodes(all_=True)} == {status}


def test_an_a12_without_pv1_3_resent_is_a_duplicate_and_a_later_one_cancels_the_transfer_before(
        ) -> None:
    """Regression (review): an A12 without PV1-3 sent twice took the patient back two
    transfers. A resend keeps its EVN-2/MSH-7; a later cancel is recorded later."""
    result = run(adt("A01", "V1", at=T0, location="4W^401^A"),
                 adt("A02", "V1", at=T0 + hours(2), location="5E^2^A"),
                 adt("A02", "V1", at=T0 + hours(4), location="6N^3^A"))
    for _ in range(2):
        result.feed(adt("A12", "V1", at=T0 + hours(6), location=None))
    assert (result.outcomes[-2:], result.only.location) == (["applied", "duplicate"], "5E^2^A")
    result.feed(adt("A12", "V1", at=T0 + hours(7), location=None))
    assert (result.last_outcome, result.only.location) == ("applied", "4W^401^A")


def test_genuine_a12_of_an_in_place_level_of_care_change_without_pv1_10() -> None:
    """Regression (review): swing bed: an A02 keeps PV1-3 4W^401^A but PV1-10 goes MED -> SWG
    (post-acute). The A12 cancelling it names the location before (the same 4W^401^A) and, as
    minimal A12s do, no PV1-10: it was taken for a resend (`duplicate`)."""
    r = run(adt("A01", "V1", at=T0, location="4W^401^A", service="MED"),
            adt("A02", "V1", at=T0 + hours(5), location="4W^401^A", service="SWG"))
    assert r.only.kind == "post_acute" and r.only.location_history == ("4W^401^A",)
    r.feed(adt("A12", "V1", at=T0 + hours(6), location="4W^401^A"))
    assert r.last_outcome == "applied", r.last_outcome
    assert (r.only.kind, r.only.hospital_service) == ("inpatient", "MED")


def test_genuine_a12_of_a_facility_only_move_without_pv1_3_4() -> None:
    """Regression (review): an A02 to the same unit name at another campus (PV1-3.4 MAIN ->
    NORTH); the A12 names PV1-3 ED^1^A without PV1-3.4: it was taken for a resend."""
    r = run(adt("A01", "V1", at=T0, location="ED^1^A", loc_facility="MAIN"),
            adt("A02", "V1", at=T0 + hours(5), location="ED^1^A", loc_facility="NORTH"))
    assert r.only.facility == "NORTH"
    r.feed(adt("A12", "V1", at=T0 + hours(6), location="ED^1^A"))
    assert r.last_outcome == "applied", r.last_outcome
    assert r.only.facility == "MAIN"


def test_a_second_a03_without_pv1_19_for_another_visit_at_the_same_time() -> None:
    """Regression (review): two visits open at HOSP (inpatient V1 admitted T0, ED V2 registered T0+1h). An
    end-of-shift job discharges both at T0+5h, both A03s without PV1-19 (the ED one PV1-2 E,
    PV1-44 T0+1h; the inpatient one PV1-2 I, PV1-44 T0). The second is a different visit (other
    class, other PV1-44, other disposition is not needed) but _ended_by finds the ED visit just
    discharged at that time: `duplicate`, V1 stays open."""
    r = run(adt("A01", "V1", at=T0), adt("A04", "V2", cls="E", at=T0 + hours(1)))
    r.feed(adt("A03", None, cls="E", at=T0 + hours(5), admitted=T0 + hours(1), disposition="01"))
    r.feed(adt("A03", None, cls="I", at=T0 + hours(5), admitted=T0, disposition="01"))
    assert r.outcomes[-2:] == ["applied", "applied"], r.outcomes
    assert {e.visit_numbers: e.status for e in r.episodes(all_=True)} == {
        ("V1",): "discharged", ("V2",): "discharged"}


def test_an_a12_of_an_in_place_move_into_psych_takes_the_service_back() -> None:
    """Regression (review): A02 in the same bed from MED to PSY (the kind stays inpatient),
    then an A12 naming the bed and MED: the A12 compared location, facility and kind only,
    found them alike and left the service at PSY."""
    r = run(adt("A01", "V1", at=T0, location="4W^401^A", service="MED"),
            adt("A02", "V1", at=T0 + hours(5), location="4W^401^A", service="PSY"))
    r.feed(adt("A12", "V1", at=T0 + hours(6), location="4W^401^A", service="MED"))
    assert (r.last_outcome, r.only.hospital_service, r.only.location_history) == ("applied", "MED", ())
    r.feed(adt("A12", "V1", at=T0 + hours(6), location="4W^401^A", service="MED"))  # resent
    assert r.last_outcome == "duplicate"


def test_resent_discharge_is_a_duplicate() -> None:
    a03 = dict(at=T0 + days(2), disposition="01", diagnoses=("I10",))
    result = run(adt("A01"), adt("A03", control_id="D1", **a03),  # type: ignore[arg-type]
                 adt("A03", control_id="D2", **a03))  # type: ignore[arg-type]
    assert (result.last_outcome, result.emitted[-1]) == ("duplicate", [])


def test_corrected_discharge_time() -> None:
    result = run(adt("A01"), adt("A03", at=T0 + days(2), disposition="01"),
                 adt("A03", discharged=T0 + days(2) - hours(6), at=T0 + days(2) + hours(3), disposition="01"))
    change = result.emitted[-1][0]
    assert (change.type, change.detail["corrected"], result.only.discharged_at) == (
        "PatientDischarged", True, T0 + days(2) - hours(6))


def test_corrected_discharge_disposition_takes_back_left_ama() -> None:
    result = run(adt("A01"), adt("A03", at=T0 + days(2), disposition="07"),
                 adt("A03", at=T0 + days(2), disposition="01"))
    assert (result.only.disposition, result.only.flag_names) == ("01", ())


def test_resent_death_is_a_duplicate() -> None:
    result = run(adt("A01"), adt("A03", at=T0 + days(1), disposition="20"),
                 adt("A03", at=T0 + days(1), disposition="20"))
    assert (result.last_outcome, result.emitted[-1], result.only.status) == ("duplicate", [], "closed")


@pytest.mark.parametrize("a11_class", ["I", None], ids=["A11 with PV1-2", "A11 without PV1-2"])
def test_cancel_before_its_admission(a11_class: str | None) -> None:
    result = run(adt("A11", "V1", cls=a11_class, occurred=T0, at=T0 + hours(1)))
    assert (result.only.status, result.last_types) == ("cancelled", ["EpisodeCancelled"])
    assert result.state.visits == {(HOSP, "V1"): result.only.id}

    result.feed(adt("A01", "V1", cls="I", at=T0))  # the admission the A11 cancelled, late
    assert (result.last_outcome, result.only.status, result.last_types) == ("duplicate", "cancelled", [])

    result.feed(adt("A01", "V1", cls="E", location="ED^3", at=T0 + hours(2)))  # admitted again
    ep = result.only
    assert (result.last_outcome, result.last_types) == ("applied", ["EpisodeReopened"])
    assert (ep.status, ep.kind, ep.location, ep.admitted_at) == ("open", "ed", "ED^3", T0 + hours(2))


def test_discharged_visit_cancelled_then_admitted_again_is_open_without_the_discharge() -> None:
    result = run(adt("A01", "V1"), adt("A03", "V1", at=T0 + days(2), disposition="07"),
                 adt("A11", "V1", at=T0 + days(3)), adt("A01", "V1", at=T0 + days(4)))
    ep = result.only
    assert (ep.status, ep.discharged_at, ep.disposition, ep.lace, ep.flags) == ("open", None, "", None, ())
    assert ep.admitted_at == T0 + days(4)


def test_reclassified_after_discharge_recomputes_lace() -> None:
    result = run(adt("A01", "V1"), adt("A03", "V1", at=T0 + days(2)))
    assert result.only.lace is not None
    result.feed(adt("A07", "V1", cls="E", at=T0 + days(3)))
    reclassified = result.only
    assert (reclassified.kind, reclassified.lace) == ("ed", None)


def test_cancelled_admission_of_a_discharged_ed_stay_drops_lace() -> None:
    result = run(adt("A04", "V1", cls="E"), adt("A01", "V2", at=T0 + hours(4)),
                 adt("A03", "V2", at=T0 + days(2)), adt("A11", "V2", at=T0 + days(3)))
    assert (result.only.kind, result.only.status, result.only.lace) == ("ed", "discharged", None)


def test_cancel_before_admission_raises_no_flags() -> None:
    result = run(adt("A01", "V1", at=T0), adt("A03", "V1", at=T0 + days(2)),
                 adt("A11", "V2", occurred=T0 + days(5), at=T0 + days(5)))
    assert (result.state.member.raised_tier, result.state.raised_tier) == (None, None)
    assert [e.flags for e in result.episodes(all_=True)] == [(), ()]


def test_cancel_of_an_ed_visit_that_became_a_stay_without_visit_numbers_does_not_raise() -> None:
    result = run(adt("A04", None, cls="E"), adt("A01", None, cls="I", at=T0 + hours(3)),
                 adt("A11", "V7", at=T0 + hours(4)))
    assert result.only.status == "cancelled"


def test_cancel_discharge_reopens_a_death_and_drops_the_flag() -> None:
    result = run(adt("A01"), adt("A03", at=T0 + days(1), disposition="20"), adt("A13", at=T0 + days(1)))
    assert (result.only.status, result.only.flags, result.only.close_reason) == ("open", (), "")


def test_cancel_discharge_for_an_unknown_visit_is_ignored() -> None:
    assert run(adt("A13", "V9")).last_outcome == "ignored"


# --- readmission within 30 days -----------------------------------------------------------------


def _stay(visit: str, admitted: datetime, los: float = 3, cls: str = "I") -> tuple[ClinicalEvent, ...]:
    return (adt("A01", visit, cls=cls, at=admitted), adt("A03", visit, cls=cls, at=admitted + days(los)))


def test_readmission_within_30_days() -> None:
    result = run(*_stay("V1", T0), adt("A01", "V2", at=T0 + days(13)))
    index, readmitted = result.episodes()
    flag = readmitted.flags[0]
    assert (flag.name, flag.detail["index_episode_id"], flag.detail["days_since_discharge"]) == (
        "readmission_30d", index.id, 10)
    assert flag.detail["notify"] == ["supervisor"]
    assert (readmitted.tier, result.state.member.raised_tier, result.state.raised_tier) == ("high",) * 3
    assert result.last_types == ["EpisodeOpened", "CoordinatorAssigned", "FlagRaised"]
    assert index.flags == ()


@pytest.mark.parametrize(
    ("earlier", "then", "flagged"),
    [
        pytest.param(_stay("V1", T0), adt("A01", "V2", at=T0 + days(43)), False, id="40 days later"),
        pytest.param(_stay("V1", T0), adt("A01", "V2", at=T0 + days(33)), True, id="exactly 30 days"),
        pytest.param(_stay("V1", T0, cls="V"), adt("A01", "V2", at=T0 + days(10)), True,
                     id="after observation"),
        pytest.param(_stay("V1", T0), adt("A01", "V2", cls="V", at=T0 + days(10)), True,
                     id="into observation"),
        pytest.param(_stay("V1", T0, los=0.2, cls="E"), adt("A01", "V2", at=T0 + days(10)), False,
                     id="ED visit is no index"),
        pytest.param(_stay("V1", T0), adt("A04", "V2", cls="E", at=T0 + days(10)), False,
                     id="ED visit is no readmission"),
        pytest.param((*_stay("V1", T0), adt("A11", "V1", at=T0 + days(4))),
                     adt("A01", "V2", at=T0 + days(10)), False, id="cancelled stay is no index"),
    ],
)
def test_readmission_rule(earlier: tuple[ClinicalEvent, ...], then: ClinicalEvent, flagged: bool) -> None:
    result = run(*earlier, then)
    assert any(e.has_flag("readmission_30d") for e in result.episodes()) is flagged
    assert result.state.member.effective_tier == ("high" if flagged else "low")


def test_ed_visit_admitted_within_30_days_of_a_discharge_is_a_readmission() -> None:
    result = run(*_stay("V1", T0), adt("A04", "V2", cls="E", at=T0 + days(8)),
                 adt("A01", "V3", at=T0 + days(8) + hours(4)))
    assert result.episodes()[-1].flag_names == ("readmission_30d",)
    assert result.last_types == ["EpisodeUpdated", "FlagRaised"]


# --- frequent ED use ----------------------------------------------------------------------------


def _ed_visits(count: int, every: float = 60) -> list[ClinicalEvent]:
    events: list[ClinicalEvent] = []
    for n in range(count):
        events += _stay(f"E{n}", T0 + days(n * every), los=0.2, cls="E")
    return events


@pytest.mark.parametrize(
    ("visits", "rules", "flagged"),
    [
        pytest.param(4, Rules(), True, id="4th visit in 12 months"),
        pytest.param(3, Rules(), False, id="3 visits"),
        pytest.param(3, Rules(frequent_ed_threshold=3), True, id="threshold 3"),
    ],
)
def test_frequent_ed(visits: int, rules: Rules, flagged: bool) -> None:
    result = run(*_ed_visits(visits), state=new_state(rules=rules))
    last = result.episodes()[-1]
    assert last.has_flag("frequent_ed") is flagged
    assert [e.has_flag("frequent_ed") for e in result.episodes()[:-1]] == [False] * (visits - 1)
    assert result.state.member.effective_tier == ("medium" if flagged else "low")
    if flagged:
        assert last.flags[0].detail == {"ed_visits": visits, "window_days": 365}
        assert last.tier == "medium"


def test_frequent_ed_counts_only_the_last_12_months() -> None:
    result = run(*_ed_visits(4, every=130))  # the first visit is 390 days before the fourth
    assert not result.episodes()[-1].has_flag("frequent_ed")


def test_frequent_ed_raises_a_medium_tier_to_high() -> None:
    state = new_state(replace(MEMBER, tier="medium"))
    result = run(*_ed_visits(4), state=state)
    assert (result.episodes()[-1].tier, result.state.raised_tier) == ("high", "high")


# --- stale open episodes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("open_event", "age", "stale"),
    [
        pytest.param(adt("A04", cls="E"), hours(49), True, id="ED open 49 h"),
        pytest.param(adt("A04", cls="E"), hours(47), False, id="ED open 47 h"),
        pytest.param(adt("A01", cls="I"), days(31), True, id="inpatient 31 days"),
        pytest.param(adt("A01", cls="I"), days(29), False, id="inpatient 29 days"),
        pytest.param(adt("A01", cls="I"), hours(49), False, id="inpatient 49 h"),
    ],
)
def test_stale_flag(open_event: ClinicalEvent, age: timedelta, stale: bool) -> None:
    result = run(open_event)
    now = T0 + age
    flagged = stale_flag(result.state, result.only, now)
    assert flagged.has_flag("stale") is stale
    assert result.only.has_flag("stale") is stale  # written back to the state
    assert stale_flag(result.state, flagged, now + hours(1)) == flagged  # once


def test_stale_flag_skips_discharged_episodes() -> None:
    result = run(adt("A04", cls="E"), adt("A03", cls="E", at=T0 + hours(3)))
    assert stale_flag(result.state, result.only, T0 + days(9)).flags == ()


def test_stale_detail() -> None:
    result = run(adt("A04", cls="E"))
    flag = stale_flag(result.state, result.only, T0 + hours(50)).flags[0]
    assert flag.detail == {"open_hours": 50, "limit_hours": 48}


# --- LACE at discharge --------------------------------------------------------------------------


def test_lace_on_inpatient_discharge() -> None:
    result = run(*_stay("E1", T0 - days(60), los=0.2, cls="E"),
                 adt("A01", "V1", admission_type="E", diagnoses=("I50.9", "N18.3"), at=T0),
                 adt("A03", "V1", at=T0 + days(5), disposition="01"))
    lace = result.episodes()[-1].lace
    assert lace == {"length_of_stay_days": 5, "l": 4, "a": 3, "c": 3, "e": 1, "charlson": 3,
                    "ed_visits_6m": 1, "total": 11, "band": "high"}
    assert result.emitted[-1][0].detail["lace"] == lace


def test_lace_acuity_from_an_ed_visit_that_became_a_stay() -> None:
    result = run(adt("A04", "V1", cls="E", at=T0), adt("A01", "V2", at=T0 + hours(4)),
                 adt("A03", "V2", at=T0 + days(1)))
    lace = result.only.lace
    assert lace is not None and (lace["a"], lace["e"], lace["l"]) == (3, 0, 1)


def test_no_lace_for_an_ed_visit() -> None:
    result = run(*_stay("V1", T0, los=0.2, cls="E"))
    assert result.only.lace is None
    assert result.emitted[-1][0].detail["lace"] is None


# --- attribution --------------------------------------------------------------------------------


def test_coordinator_away_on_the_admission_date_gives_the_backup() -> None:
    away = replace(C1, away_from=T0.date(), away_to=T0.date())
    result = run(adt("A01", at=T0), state=new_state(people=(away, C2, S1)))
    ep, assigned = result.only, result.emitted[-1][1]
    assert (ep.coordinator_id, ep.coordinator_reason) == ("C2", "backup")
    assert (assigned.type, assigned.detail["coordinator_id"], assigned.detail["reason"]) == (
        "CoordinatorAssigned", "C2", "backup")


def test_coordinator_away_on_the_discharge_date_is_replaced_at_discharge() -> None:
    discharged = T0 + days(4)
    away = replace(C1, away_from=discharged.date(), away_to=None)
    result = run(adt("A01", at=T0), adt("A03", at=discharged), state=new_state(people=(away, C2, S1)))
    assert result.emitted[0][1].detail["coordinator_id"] == "C1"
    assert result.last_types == ["CoordinatorAssigned", "PatientDischarged"]
    assigned = result.emitted[-1][0]
    assert (assigned.detail["coordinator_id"], assigned.detail["reason"]) == ("C2", "backup")
    assert (result.only.coordinator_id, result.only.coordinator_reason) == ("C2", "backup")


def test_discharge_opened_episode_is_attributed_on_the_discharge_date() -> None:
    away = replace(C1, away_from=date(2025, 3, 1), away_to=T0.date())  # back before the discharge
    result = run(adt("A03", admitted=T0, at=T0 + days(3)), state=new_state(people=(away, C2, S1)))
    assert [c.detail["coordinator_id"] for c in result.state.changes if c.type == "CoordinatorAssigned"] == [
        "C1"]


# --- merges -------------------------------------------------------------------------------------

PRIOR = Member(member_id="M2", coordinator_id="C1", identifiers=(MemberIdentifier.of("MRN2", "HOSP"),))


def _episodes_of(member: Member, *events: ClinicalEvent) -> PatientState:
    return run(*events, state=new_state(member)).state


def _merge_state() -> tuple[PatientState, dict[str, Episode]]:
    """M1 is in an inpatient stay V1; M2 (MRN2, the same person) has the same stay as V9 and an
    older ED visit elsewhere."""
    survivor = _episodes_of(MEMBER, adt("A01", "V1", at=T0))
    prior = _episodes_of(PRIOR, adt("A04", "V8", cls="E", mrn="MRN2", facility=OTHER, at=T0 - days(30)),
                         adt("A03", "V8", cls="E", mrn="MRN2", facility=OTHER, at=T0 - days(30) + hours(4)),
                         adt("A01", "V9", mrn="MRN2", at=T0 + hours(2)))
    state = new_state()
    state.episodes.update({**survivor.episodes, **prior.episodes})
    state.visits.update({**survivor.visits, **prior.visits})
    state.prior_members = frozenset({"M2"})
    by_visit = {e.visit_numbers[0]: e for e in state.episodes.values()}
    return state, by_visit


def test_merge_moves_episodes_and_combines_the_same_stay() -> None:
    state, ep = _merge_state()
    result = run(adt("A40", None, mrn="MRN1", prior=("MRN2",), pv1=False, at=T0 + days(1)), state=state)
    assert (result.last_outcome, result.last_types) == ("applied", ["EpisodesMerged", "EpisodesMerged"])
    kept, folded, moved = (state.episodes[ep[v].id] for v in ("V1", "V9", "V8"))
    assert (moved.member_id, moved.status, moved.patient_identifier) == ("M1", "discharged", "MRN1@HOSP")
    assert (kept.member_id, kept.status, kept.visit_numbers) == ("M1", "open", ("V1", "V9"))
    assert (folded.status, folded.merged_into, folded.member_id) == ("cancelled", kept.id, "M1")
    assert state.visits[(HOSP, "V9")] == state.visits[(HOSP, "V1")] == kept.id
    assert state.new_visits == {(HOSP, "V9"): kept.id}
    assert state.moved_timelines == {folded.id: kept.id}
    assert state.learned == [MemberIdentifier("MRN2", "HOSP")]
    assert len(state.own_episodes()) == 2
    merged = [c.detail["merged_episode_id"] for c in result.emitted[-1]]
    assert merged == [None, folded.id]


def test_merge_replayed_changes_nothing() -> None:
    state, _ = _merge_state()
    a40 = adt("A40", None, mrn="MRN1", prior=("MRN2",), pv1=False, at=T0 + days(1))
    result = run(a40, a40, state=state)
    assert (result.outcomes, result.emitted[-1]) == (["applied", "duplicate"], [])
    assert len(state.own_episodes()) == 2


def test_merge_keeps_the_earlier_stay() -> None:
    survivor = _episodes_of(MEMBER, adt("A01", "V1", at=T0 + hours(3)))
    prior = _episodes_of(PRIOR, adt("A01", "V9", mrn="MRN2", at=T0))
    state = new_state()
    state.episodes.update({**survivor.episodes, **prior.episodes})
    state.visits.update({**survivor.visits, **prior.visits})
    state.prior_members = frozenset({"M2"})
    run(adt("A40", None, prior=("MRN2",), pv1=False, at=T0 + days(1)), state=state)
    (kept,) = state.own_episodes()
    assert (kept.visit_numbers, kept.admitted_at) == (("V9", "V1"), T0)
    assert state.visits == {(HOSP, "V1"): kept.id, (HOSP, "V9"): kept.id}


@pytest.mark.parametrize("ed_discharged", [False, True], ids=["ED open", "ED discharged, 09"])
def test_a_merge_folding_a_stay_into_an_ed_visit_keeps_the_stay(ed_discharged: bool) -> None:
    """Regression (review): M1's ED visit and the same person's admission from it under a
    second MRN, combined by the A40, stayed an ED visit (discharged, if the ED part was); the
    stay's A03 then discharged it as ED, without LACE."""
    ed = [adt("A04", "V1", cls="E", at=T0)]
    if ed_discharged:
        ed.append(adt("A03", "V1", cls="E", at=T0 + hours(4), disposition="09"))
    survivor = _episodes_of(MEMBER, *ed)
    prior = _episodes_of(PRIOR, adt("A01", "V9", cls="I", mrn="MRN2", at=T0 + hours(3)))
    state = new_state()
    state.episodes.update({**survivor.episodes, **prior.episodes})
    state.visits.update({**survivor.visits, **prior.visits})
    state.prior_members = frozenset({"M2"})
    result = run(adt("A40", None, prior=("MRN2",), pv1=False, at=T0 + hours(8)), state=state)
    (kept,) = state.own_episodes()
    assert (kept.kind, kept.status, kept.kind_history, kept.discharged_at) == (
        "inpatient", "open", ("ed",), None)
    result.feed(adt("A03", "V9", cls="I", at=T0 + days(3), disposition="01"))
    (kept,) = state.own_episodes()
    assert (kept.kind, kept.status, kept.discharged_at) == ("inpatient", "discharged", T0 + days(3))
    assert kept.lace is not None


def test_merge_finds_episodes_by_the_prior_identifier() -> None:
    stray = _episodes_of(Member(member_id="M3", coordinator_id="C1"), adt("A04", "V5", cls="E", mrn="MRN2"))
    state = new_state()
    state.episodes.update(stray.episodes)
    result = run(adt("A40", None, prior=("MRN2",), pv1=False), state=state)
    assert [(e.member_id, e.patient_identifier) for e in state.own_episodes()] == [("M1", "MRN1@HOSP")]
    assert result.emitted[-1][0].detail["from_member_id"] == "M3"


def test_merge_with_nothing_to_move_learns_the_identifiers() -> None:
    result = run(adt("A40", None, prior=("MRN7",), pv1=False))
    assert (result.last_outcome, result.state.changes, result.state.learned) == (
        "applied", [], [MemberIdentifier("MRN7", "HOSP")])
    own = run(adt("A40", None, prior=("MRN1",), pv1=False))  # an identifier the member holds
    assert (own.last_outcome, own.state.learned) == ("duplicate", [])


def test_merge_of_different_stays_at_one_facility_keeps_both() -> None:
    survivor = _episodes_of(MEMBER, adt("A01", "V1", at=T0 + days(20)))
    prior = _episodes_of(PRIOR, *_stay("V9", T0, los=3))
    state = new_state()
    state.episodes.update({**survivor.episodes, **prior.episodes})
    state.prior_members = frozenset({"M2"})
    run(adt("A40", None, prior=("MRN2",), pv1=False, at=T0 + days(21)), state=state)
    assert [(e.visit_numbers, e.status) for e in state.own_episodes()] == [
        (("V9",), "discharged"), (("V1",), "open")]


# --- random sequences ---------------------------------------------------------------------------

STATUSES = {"open", "discharged", "closed", "cancelled"}
TRIGGERS = ["A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13", "A21", "A22"]
Step = tuple[str, str | None, str | None, int, str | None, str, str | None]
_step: st.SearchStrategy[Step] = st.tuples(
    st.sampled_from(TRIGGERS), st.sampled_from(["V1", "V2", None]),
    st.sampled_from(["E", "I", "O", "V", None]),
    st.integers(min_value=-6, max_value=72), st.sampled_from([None, "01", "07", "20"]),
    st.sampled_from([HOSP, OTHER]), st.sampled_from(["4W^1", "5E^2", None]),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, min_size=1, max_size=14))
def test_random_sequences_keep_the_invariants(steps: list[Step]) -> None:
    state = new_state()
    at = T0
    events = []
    for trigger, visit, cls, offset, disposition, facility, location in steps:
        at = at + hours(offset)
        events.append(adt(trigger, visit, cls=cls, at=at, disposition=disposition, facility=facility,
                          location=location))
    result = Run(state).feed(*events)
    _check_invariants(result)
    again = Run(new_state()).feed(*events)
    assert (again.state.episodes, again.state.changes) == (state.episodes, state.changes)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, min_size=1, max_size=14), st.data())
def test_a_resend_changes_nothing(steps: list[Step], data: st.DataObject) -> None:
    """Any event sent again at once under a new MSH-10 is a duplicate (or ignored, as the first
    was): the episodes are as they were."""
    at = T0
    result = Run(new_state())
    for trigger, visit, cls, offset, disposition, facility, location in steps:
        at = at + hours(offset)
        fields = dict(cls=cls, at=at, disposition=disposition, facility=facility, location=location)
        result.feed(adt(trigger, visit, **fields))  # type: ignore[arg-type]
        if not data.draw(st.booleans()):
            continue
        before = dict(result.state.episodes)
        first = result.last_outcome
        result.feed(adt(trigger, visit, **fields))  # type: ignore[arg-type]
        assert result.last_outcome in {"duplicate", "ignored"}, (trigger, first, result.last_outcome)
        assert result.state.episodes == before


def _check_invariants(result: Run) -> None:
    state = result.state
    assert set(result.outcomes) <= {"applied", "duplicate", "ignored"}
    live: dict[tuple[str, str], str] = {}
    for episode in state.episodes.values():
        assert episode.status in STATUSES
        assert episode.member_id == "M1"
        if episode.status != "cancelled":
            for number in episode.visit_numbers:
                key = (episode.facility_key, number)
                assert live.setdefault(key, episode.id) == episode.id, f"two live episodes for {key}"
        if episode.status == "open":
            assert (episode.discharged_at, episode.disposition, episode.lace) == (None, "", None)
            assert not {"left_ama", "expired"} & set(episode.flag_names)
        elif episode.status == "cancelled":
            assert episode.cancelled_at is not None or episode.merged_into
        else:
            assert episode.discharged_at is not None
        assert (episode.status == "closed") == (episode.close_reason == "expired")
        assert episode.kind != "ed" or episode.lace is None
    for key, owner in state.visits.items():
        assert owner in state.episodes and key[1] in state.episodes[owner].visit_numbers
    for outcome, emitted in zip(result.outcomes, result.emitted, strict=True):
        assert (outcome == "applied") == bool(emitted)  # no merges here: applied always says what
    assert {c.episode_id for c in state.changes} <= set(state.episodes)
    assert {c.episode_id for c in state.changes} <= state.changed


def test_discharge_without_pv1_or_evn_opens_and_discharges_at_msh_7() -> None:
    state = new_state()
    assert apply(state, adt("A03", None, pv1=False, evn=False, message_time=T0 + days(2))) == "applied"
    (ep,) = state.episodes.values()
    assert (ep.kind, ep.status, ep.admitted_at, ep.discharged_at) == (
        "inpatient", "discharged", None, T0 + days(2))


def test_an_admission_after_the_ed_discharge_under_the_same_visit_continues_the_visit() -> None:
    """Some feeds send A03 for the ED part, then A01 with the same PV1-19."""
    result = run(adt("A04", "V1", cls="E", at=T0),
                 adt("A03", "V1", cls="E", at=T0 + hours(5), disposition="09"),
                 adt("A01", "V1", cls="I", at=T0 + hours(6)))
    ep = result.only
    assert (ep.kind, ep.status, ep.discharged_at, ep.kind_history) == ("inpatient", "open", None, ("ed",))
    assert result.last_types == ["EpisodeReopened", "EpisodeUpdated"]
