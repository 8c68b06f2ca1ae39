"""What an ADT event means for episodes: the action (routed on MSH-9, DOMAIN.md section 1), the
episode kind, the clinical time and the visit fields. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.adt_event import AdtEvent, Location, Visit
from transitions.model import MemberIdentifier

Kind = Literal["ed", "inpatient", "observation", "post_acute"]
Action = Literal[
    "open", "preadmit", "transfer", "discharge", "class_change", "update", "cancel_admit",
    "cancel_transfer", "cancel_discharge", "leave", "return", "merge", "ignore",
]

# MSH-9.2 trigger -> action. A04 and A01 open only for an ED, inpatient or observation class.
_ACTIONS: dict[str, Action] = {
    "A01": "open", "A04": "open", "A06": "open", "A05": "preadmit", "A02": "transfer",
    "A03": "discharge", "A07": "class_change", "A08": "update", "A11": "cancel_admit",
    "A12": "cancel_transfer", "A13": "cancel_discharge", "A21": "leave", "A22": "return",
    "A40": "merge", "A18": "merge", "A34": "merge", "A36": "merge", "A39": "merge",
}
# PV1-10 hospital services (local codes seen in feeds) that mean observation or post-acute care.
OBSERVATION_SERVICES = frozenset({"OBS", "OBV", "OBSERVATION"})
POST_ACUTE_SERVICES = frozenset({"SNF", "REH", "RHB", "REHAB", "IRF", "LTC", "LTCH", "SWG", "SWING"})
PSYCH_SERVICES = frozenset({"PSY", "PSYCH", "BH", "BHS"})
EXPIRED_DISPOSITION = "20"  # PV1-36, UB-04 patient status: expired


@dataclass(frozen=True)
class ClinicalEvent:
    """The parts of an :class:`AdtEvent` the episode machine reads."""

    event_id: str
    message_id: int
    trigger: str  # MSH-9.2
    action: Action
    occurred_at: datetime  # the clinical time (see :func:`clinical_time`)
    recorded_at: datetime  # EVN-2, else MSH-7, else receipt: when the sender recorded it
    facility_key: str  # MSH-4: the namespace of PV1-19 visit numbers
    facility: str  # PV1-3.4, else EVN-7, else MSH-4
    location_facility: str  # PV1-3.4 only ("" when the location names no facility)
    visit_number: str | None  # PV1-19
    patient_identifier: str  # value@authority of the first PID-3 (the Kafka key)
    patient_class: str  # PV1-2 (table 0004)
    kind: Kind | None  # the episode kind this class means, None when it opens none
    location: str  # PV1-3 as "point of care^room^bed"
    hospital_service: str  # PV1-10
    admission_type: str  # PV1-4 (E = emergency)
    admitted_at: datetime | None  # PV1-44
    discharged_at: datetime | None  # PV1-45
    disposition: str  # PV1-36
    discharged_to: str  # PV1-37
    diagnoses: tuple[str, ...]  # DG1-3 codes, principal (DG1-15 = 1) first
    died: bool  # PID-30 = Y or PV1-36 = 20
    prior_identifiers: tuple[MemberIdentifier, ...]  # MRG-1
    prior_visit_number: str | None  # MRG-5


def clinical_event(event: AdtEvent, post_acute_facilities: Collection[str] = ()) -> ClinicalEvent:
    """Read ``event`` for the episode machine. Never raises on missing segments or fields."""
    visit = event.visit or Visit()
    trigger = (event.header.trigger_event or "").upper()
    facility_key = event.header.sending_facility or ""
    facility = (visit.location.facility if visit.location else None) or (
        event.event.event_facility if event.event else None) or facility_key
    patient_class = (visit.patient_class or "").upper()
    service = (visit.hospital_service or "").upper()
    kind = episode_kind(trigger, patient_class, service, facility in post_acute_facilities
                        or facility_key in post_acute_facilities)
    action = _ACTIONS.get(trigger, "ignore")
    return ClinicalEvent(
        event_id=event.event_id, message_id=event.message_id, trigger=trigger, action=action,
        occurred_at=clinical_time(event, action), recorded_at=_recorded_at(event),
        facility_key=facility_key, facility=facility,
        location_facility=(visit.location.facility if visit.location else None) or "",
        visit_number=visit.visit_number,
        patient_identifier=_patient_identifier(event), patient_class=patient_class, kind=kind,
        location=location_text(visit.location), hospital_service=service,
        admission_type=(visit.admission_type or "").upper(), admitted_at=visit.admitted_at,
        discharged_at=visit.discharged_at, disposition=_disposition(visit.discharge_disposition),
        discharged_to=visit.discharged_to_location or "", diagnoses=_diagnoses(event),
        died=bool(event.patient.death_indicator)
        or _disposition(visit.discharge_disposition) == EXPIRED_DISPOSITION,
        prior_identifiers=tuple(MemberIdentifier.of(i.value, i.assigning_authority
                                                    or i.assigning_facility)
                                for i in (event.merge.prior_identifiers if event.merge else ())),
        prior_visit_number=event.merge.prior_visit_number if event.merge else None,
    )


def episode_kind(trigger: str, patient_class: str, service: str, post_acute_facility: bool) -> Kind | None:
    """The kind of episode a visit is (PV1-2 table 0004, PV1-10, the facility's care setting).

    E is an ED visit; I (and B obstetrics) an inpatient stay, or a post-acute stay at a
    post-acute facility or service; V, or an observation service, an observation stay. An A01
    or A06 without a class is an inpatient stay. Outpatient and pre-admit classes open nothing,
    except O on an A01 (an admission as outpatient is how many feeds send observation).
    """
    if patient_class == "E":
        return "ed"
    if patient_class == "V" or service in OBSERVATION_SERVICES:
        return "observation"
    if post_acute_facility or service in POST_ACUTE_SERVICES:
        return "post_acute" if patient_class in ("I", "R", "") else None
    if patient_class in ("I", "B"):
        return "inpatient"
    if patient_class == "" and trigger in ("A01", "A06", "A02", "A03"):
        return "inpatient"
    if patient_class == "O" and trigger == "A01":
        return "observation"
    return None


def clinical_time(event: AdtEvent, action: Action) -> datetime:
    """When it happened clinically (DESIGN.md section 5: clocks start at the clinical time).

    Discharge: PV1-45. Admission: PV1-44. Otherwise (and as fallbacks): EVN-6, EVN-2, MSH-7,
    and the receipt time as the last resort.
    """
    visit = event.visit
    first: datetime | None = None
    if visit is not None and action == "discharge":
        first = visit.discharged_at
    elif visit is not None and action == "open":
        first = visit.admitted_at
    evn = event.event
    for candidate in (first, evn.occurred_at if evn else None, evn.recorded_at if evn else None,
                      event.header.message_time):
        if candidate is not None:
            return candidate
    return event.received_at


def _patient_identifier(event: AdtEvent) -> str:
    """The first PID-3 as ``VALUE@AUTHORITY``, normalised like the roster's identifiers."""
    for i in event.patient.identifiers:
        return str(MemberIdentifier.of(i.value, i.assigning_authority or i.assigning_facility))
    return event.patient_key


def _recorded_at(event: AdtEvent) -> datetime:
    evn = event.event
    return (evn.recorded_at if evn else None) or event.header.message_time or event.received_at


def location_text(location: Location | None) -> str:
    """PV1-3 as ``point of care^room^bed`` (empty parts kept so positions stay readable)."""
    if location is None:
        return ""
    parts = [location.point_of_care or "", location.room or "", location.bed or ""]
    return "^".join(parts).rstrip("^")


def _disposition(value: str | None) -> str:
    """PV1-36 as the two-digit UB-04 code ("1" -> "01")."""
    text = (value or "").strip()
    return text.zfill(2) if text.isdigit() and len(text) == 1 else text


def _diagnoses(event: AdtEvent) -> tuple[str, ...]:
    """DG1-3 codes, the principal diagnosis (DG1-15 = 1, else the first final one) first."""
    ranked = sorted(
        (d for d in event.diagnoses if d.code),
        key=lambda d: (d.priority != "1", (d.diagnosis_type or "").upper() != "F"),
    )
    seen: dict[str, None] = {}
    for d in ranked:
        seen.setdefault((d.code or "").upper(), None)
    return tuple(seen)
