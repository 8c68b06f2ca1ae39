"""Builders for the episode machine tests: ADT events as the listener maps them, one member's
state with a small staff directory, and a runner that records what each event did."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from schemas.adt_event import AdtEvent
from transitions.clinical import ClinicalEvent, clinical_event
from transitions.episode import Change, Episode
from transitions.machine import apply
from transitions.model import Member, MemberIdentifier, StaffMember
from transitions.state import Outcome, PatientState, Rules

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)  # a Monday
HOSP, OTHER = "HOSP", "OTHER"  # MSH-4 of two sending facilities
MRN = "MRN1"
AUTHORITY = "HOSP"

Auto = Literal["auto"]
_control_ids = itertools.count(1)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def adt(
    trigger: str,
    visit: str | None = "V1",
    *,
    cls: str | None = "I",
    at: datetime = T0,
    recorded: datetime | None = None,
    occurred: datetime | None = None,
    message_time: datetime | None = None,
    facility: str = HOSP,
    location: str | None = "4W^401^A",
    loc_facility: str | None = None,
    admitted: datetime | None | Auto = "auto",
    discharged: datetime | None | Auto = "auto",
    disposition: str | None = None,
    service: str | None = None,
    admission_type: str | None = None,
    diagnoses: Sequence[str] = (),
    prior: Sequence[str] = (),
    died: bool | None = None,
    mrn: str = MRN,
    pv1: bool = True,
    evn: bool = True,
    control_id: str | None = None,
    rules: Rules | None = None,
) -> ClinicalEvent:
    """One ADT event (``ADT^{trigger}``) as :func:`clinical_event` reads it.

    ``at`` is when the message was recorded (EVN-2 and MSH-7 unless given); PV1-44 defaults to
    ``at`` on A01/A04/A06 and PV1-45 to ``at`` on A03 ("auto"); pass None to leave them out.
    ``location`` is ``point of care^room^bed`` (PV1-3); ``loc_facility`` is PV1-3.4.
    """
    control = control_id or f"{trigger}-{next(_control_ids)}"
    point, room, bed = ((location or "").split("^") + ["", "", ""])[:3]
    if admitted == "auto":
        admitted = at if trigger in ("A01", "A04", "A06") else None
    if discharged == "auto":
        discharged = at if trigger == "A03" else None
    raw: dict[str, Any] = {
        "event_id": f"{facility}|{control}",
        "message_id": next(_control_ids),
        "patient_key": f"{mrn}@{AUTHORITY}",
        "received_at": (recorded or at) + timedelta(minutes=1),
        "facility_time_zone": "America/New_York",
        "header": {
            "sending_facility": facility,
            "message_type": "ADT",
            "trigger_event": trigger,
            "control_id": control,
            "message_time": message_time or recorded or at,
        },
        "patient": {
            "identifiers": [{"value": mrn, "assigning_authority": AUTHORITY, "identifier_type": "MR"}],
            "death_indicator": died,
        },
        "diagnoses": [
            {"code": code, "diagnosis_type": "F", "priority": "1" if i == 0 else None}
            for i, code in enumerate(diagnoses)
        ],
    }
    if evn:
        raw["event"] = {"event_type_code": trigger, "recorded_at": recorded or at, "occurred_at": occurred}
    if pv1:
        raw["visit"] = {
            "patient_class": cls,
            "visit_number": visit,
            "location": {"point_of_care": point or None, "room": room or None, "bed": bed or None,
                         "facility": loc_facility} if location is not None or loc_facility else None,
            "hospital_service": service,
            "admission_type": admission_type,
            "admitted_at": admitted,
            "discharged_at": discharged,
            "discharge_disposition": disposition,
        }
    if prior:
        raw["merge"] = {"prior_identifiers": [{"value": p, "assigning_authority": AUTHORITY} for p in prior]}
    event = AdtEvent.model_validate(raw)
    return clinical_event(event, (rules or Rules()).post_acute_facilities)


def coordinator(staff_id: str, **changes: Any) -> StaffMember:
    return StaffMember(staff_id=staff_id, role="care_coordinator", team="T1", supervisor_id="S1", **changes)


C1 = coordinator("C1", backup_id="C2")
C2 = coordinator("C2")
S1 = StaffMember(staff_id="S1", role="supervisor", team="T1")
MEMBER = Member(member_id="M1", family_name="DOE", given_name="JANE", coordinator_id="C1",
                identifiers=(MemberIdentifier.of(MRN, AUTHORITY),), tier="low")


def staff(*people: StaffMember) -> dict[str, StaffMember]:
    return {p.staff_id: p for p in (people or (C1, C2, S1))}


def new_state(member: Member = MEMBER, *, rules: Rules | None = None,
              people: Iterable[StaffMember] = ()) -> PatientState:
    """An empty state for ``member`` with the usual directory (C1 with backup C2, team T1)."""
    return PatientState(member=member, episodes={}, visits={}, staff=staff(*people),
                        rules=rules or Rules())


@dataclass
class Run:
    """What a sequence of events did to one state."""

    state: PatientState
    outcomes: list[Outcome] = field(default_factory=list)
    emitted: list[list[Change]] = field(default_factory=list)  # the changes of each event

    def feed(self, *events: ClinicalEvent) -> Run:
        for ev in events:
            before = len(self.state.changes)
            self.outcomes.append(apply(self.state, ev))
            self.emitted.append(self.state.changes[before:])
        return self

    @property
    def last_outcome(self) -> Outcome:
        return self.outcomes[-1]

    @property
    def last_types(self) -> list[str]:
        return [c.type for c in self.emitted[-1]]

    @property
    def types(self) -> list[str]:
        return [c.type for c in self.state.changes]

    def episodes(self, *, all_: bool = False) -> list[Episode]:
        """The member's episodes, oldest first (cancelled ones too when ``all_``)."""
        chosen = [e for e in self.state.episodes.values() if all_ or e.counts]
        return sorted(chosen, key=lambda e: (e.admitted_at or T0 - days(9999), e.id))

    @property
    def only(self) -> Episode:
        """The single episode of the run (fails when there is not exactly one)."""
        found = self.episodes(all_=True)
        assert len(found) == 1, [(e.kind, e.status, e.visit_numbers) for e in found]
        return found[0]

    def summary(self) -> list[str]:
        return [f"{e.kind}/{e.status}" for e in self.episodes(all_=True)]


def run(*events: ClinicalEvent, state: PatientState | None = None) -> Run:
    return Run(state or new_state()).feed(*events)
