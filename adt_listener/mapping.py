"""Map a parsed ADT message (ER7) to the canonical :class:`~schemas.adt_event.AdtEvent`.

Pure: no I/O, no clock. Values are read with the message's own delimiters and come out with
HL7 escapes decoded; blank values become None. Routing fields come from MSH-9 only (EVN-1 often
disagrees with it in real feeds). Where a segment can occur more than once per patient group
(A17 swaps, A40 with several PID/MRG pairs) the first PID, PD1, PV1, PV2 and MRG are mapped;
every ROL, DG1 and IN1 is mapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

from adt_listener.hl7.er7 import Message
from adt_listener.hl7.timestamps import TimestampError, parse_hl7_date, parse_hl7_datetime
from schemas.adt_event import (
    Address,
    AdtEvent,
    CodedValue,
    Diagnosis,
    EventInfo,
    Header,
    Identifier,
    Insurance,
    Location,
    Merge,
    Patient,
    PersonName,
    Provider,
    Role,
    Visit,
)


class MappingError(ValueError):
    """The message cannot be mapped to an event.

    Attributes:
        segment: the segment at fault (``PV1``).
        field: the HL7 field number at fault (45).
        reason: what is wrong, naming the field (``PV1-45 discharge time "2023X" is not ...``).
    """

    def __init__(self, segment: str, field: int, reason: str) -> None:
        super().__init__(reason)
        self.segment = segment
        self.field = field
        self.reason = reason


class _Fields:
    """Reads leaf values of one message: decoded, stripped, '' as None; timestamps checked."""

    def __init__(self, message: Message, tz: ZoneInfo) -> None:
        self.message = message
        self.tz = tz

    def text(self, seg: str, field: int, comp: int = 1, sub: int = 1) -> str | None:
        """First repetition of ``seg``-``field``, component ``comp``, subcomponent ``sub``."""
        return self.message.get(seg, field, comp, sub).strip() or None

    def leaf(self, raw: str, comp: int = 1, sub: int = 1) -> str | None:
        """Component ``comp``/``sub`` of a raw repetition, decoded."""
        m = self.message
        return m.decode(m.component(raw, comp, sub)).strip() or None

    def reps(self, seg: str, field: int) -> list[str]:
        return self.message.repetitions(seg, field)

    def time(self, seg: str, field: int, label: str) -> datetime | None:
        """A DTM/TS field (component 1); MappingError when it is not a valid timestamp."""
        value = self.message.get(seg, field)
        try:
            return parse_hl7_datetime(value, self.tz)
        except TimestampError as exc:
            reason = f"{seg}-{field} {label} is not a valid HL7 timestamp: {exc}"
            raise MappingError(seg, field, reason) from exc

    def day(self, seg: str, field: int, label: str) -> date | None:
        value = self.message.get(seg, field)
        try:
            return parse_hl7_date(value)
        except TimestampError as exc:
            reason = f"{seg}-{field} {label} is not a valid HL7 date: {exc}"
            raise MappingError(seg, field, reason) from exc


def to_adt_event(
    message: Message, *, message_id: int, received_at: datetime, tz: ZoneInfo
) -> AdtEvent:
    """Map an ADT message to the canonical event.

    Arguments:
        message: the parsed message.
        message_id: the message store id (used for ``event_id`` when MSH-10 is empty).
        received_at: when the listener received it (aware).
        tz: the facility time zone for timestamps written without a UTC offset.

    Raises:
        MappingError: MSH-9 has no message type; a clinical timestamp (MSH-7, EVN-2, EVN-6,
            PID-29, PV1-44, PV1-45) or the birth date PID-7 is not valid; or there is no
            patient identifier at all (PID-3 empty and no MRG-1).
    """
    f = _Fields(message, tz)
    header = _map_header(f)
    patient = _map_patient(f)
    merge = _map_merge(f)
    key = patient_key(patient.identifiers, merge.prior_identifiers if merge else ())
    if not key:
        raise MappingError("PID", 3, "PID-3 has no patient identifier and there is no MRG-1")
    return AdtEvent(
        event_id=event_id(header, message_id),
        message_id=message_id,
        patient_key=key,
        received_at=received_at,
        facility_time_zone=tz.key,
        header=header,
        event=_map_event(f),
        patient=patient,
        primary_care_provider=_map_primary_care_provider(f),
        roles=_map_roles(f),
        visit=_map_visit(f),
        diagnoses=_map_diagnoses(f),
        insurance=_map_insurance(f),
        merge=merge,
    )


def event_id(header: Header, message_id: int) -> str:
    """``{MSH-4}|{MSH-10}``, or ``msg-{message_id}`` when MSH-10 is empty."""
    if header.control_id:
        return f"{header.sending_facility or ''}|{header.control_id}"
    return f"msg-{message_id}"


def patient_key(identifiers: Sequence[Identifier], prior: Sequence[Identifier] = ()) -> str:
    """The Kafka key: ``value@authority`` of the first PID-3 identifier, else of MRG-1, else ''."""
    first = identifiers[:1] or prior[:1]
    return f"{first[0].value}@{first[0].assigning_authority or ''}" if first else ""


def _map_header(f: _Fields) -> Header:
    """MSH. The message type (MSH-9.1) is required."""
    message_type = f.text("MSH", 9, 1)
    if message_type is None:
        raise MappingError("MSH", 9, "MSH-9 message type is empty")
    return Header(
        sending_application=_hd(f, f.message.field("MSH", 3)),  # MSH-3
        sending_facility=_hd(f, f.message.field("MSH", 4)),  # MSH-4
        receiving_application=_hd(f, f.message.field("MSH", 5)),  # MSH-5
        receiving_facility=_hd(f, f.message.field("MSH", 6)),  # MSH-6
        message_time=f.time("MSH", 7, "message time"),
        message_type=message_type,  # MSH-9.1 MSG.1
        trigger_event=f.text("MSH", 9, 2),  # MSG.2
        message_structure=f.text("MSH", 9, 3),  # MSG.3
        control_id=f.text("MSH", 10),
        version=f.text("MSH", 12, 1),
        processing_id=f.text("MSH", 11, 1),
        character_set=f.text("MSH", 18),
    )


def _map_event(f: _Fields) -> EventInfo | None:
    """EVN, or None when the message has none."""
    if not f.message.has("EVN"):
        return None
    return EventInfo(
        event_type_code=f.text("EVN", 1),
        recorded_at=f.time("EVN", 2, "recorded time"),
        occurred_at=f.time("EVN", 6, "event occurred time"),
        event_facility=f.text("EVN", 7, 1),
    )


def _map_patient(f: _Fields) -> Patient:
    """The first PID; an empty Patient when there is none (e.g. A06 carrying only MRG)."""
    return Patient(
        identifiers=_identifiers(f, "PID", 3),
        name=_name(f),
        birth_date=f.day("PID", 7, "birth date"),
        sex=f.text("PID", 8),
        address=_address(f),
        phones=_phones(f),
        account_number=f.text("PID", 18, 1),
        death_time=f.time("PID", 29, "death time"),
        death_indicator={"Y": True, "N": False}.get((f.text("PID", 30) or "").upper()),
    )


def _map_primary_care_provider(f: _Fields) -> Provider | None:
    """PD1-4, first repetition."""
    reps = f.reps("PD1", 4)
    return _provider(f, reps[0]) if reps else None


def _map_roles(f: _Fields) -> tuple[Role, ...]:
    """Every ROL: ROL-3.1 role code, ROL-4 person (first repetition)."""
    roles = []
    for occurrence in range(f.message.count("ROL")):
        person = f.message.repetitions("ROL", 4, occurrence)
        role_code = f.message.get("ROL", 3, occurrence=occurrence).strip() or None
        roles.append(Role(role_code=role_code, person=_provider(f, person[0]) if person else None))
    return tuple(roles)


def _map_visit(f: _Fields) -> Visit | None:
    """PV1 (with PV2-3 admit reason), or None when the message has no PV1."""
    if not f.message.has("PV1"):
        return None
    return Visit(
        patient_class=f.text("PV1", 2),
        location=_location(f, f.message.field("PV1", 3)),
        admission_type=f.text("PV1", 4),
        prior_location=_location(f, f.message.field("PV1", 6)),
        attending_doctor=_first_provider(f, "PV1", 7),
        hospital_service=f.text("PV1", 10),
        admit_source=f.text("PV1", 14),
        admitting_doctor=_first_provider(f, "PV1", 17),
        visit_number=f.text("PV1", 19, 1),
        discharge_disposition=f.text("PV1", 36),
        discharged_to_location=f.text("PV1", 37, 1),
        admitted_at=f.time("PV1", 44, "admit time"),
        discharged_at=f.time("PV1", 45, "discharge time"),
        admit_reason=_coded(f, "PV2", 3),
    )


def _map_diagnoses(f: _Fields) -> tuple[Diagnosis, ...]:
    """Every DG1 that carries anything."""
    found = []
    for occurrence in range(f.message.count("DG1")):
        seg = f.message.segment("DG1", occurrence) or []
        code = _first_rep(f, seg, 3)  # DG1-3 CWE
        parts = dict(
            code=f.leaf(code, 1),
            text=f.leaf(code, 2) or _at(f, seg, 4),
            coding_system=f.leaf(code, 3),
            diagnosis_type=_at(f, seg, 6),
            priority=_at(f, seg, 15),
        )
        if any(parts.values()):
            found.append(Diagnosis(**parts))
    return tuple(found)


def _map_insurance(f: _Fields) -> tuple[Insurance, ...]:
    """Every IN1 that carries anything; the member id is IN1-49.1, else IN1-36."""
    found = []
    for occurrence in range(f.message.count("IN1")):
        seg = f.message.segment("IN1", occurrence) or []
        parts = dict(
            plan_id=_at(f, seg, 2),
            company_id=_at(f, seg, 3),
            company_name=_at(f, seg, 4),
            member_id=_at(f, seg, 49) or _at(f, seg, 36),
        )
        if any(parts.values()):
            found.append(Insurance(**parts))
    return tuple(found)


def _map_merge(f: _Fields) -> Merge | None:
    """MRG (the first), or None when absent."""
    if not f.message.has("MRG"):
        return None
    return Merge(
        prior_identifiers=_identifiers(f, "MRG", 1),
        prior_account=f.text("MRG", 3, 1),
        prior_visit_number=f.text("MRG", 5, 1),
    )


# --- HL7 data types -------------------------------------------------------------------------


def _first_rep(f: _Fields, seg: list[str], field: int) -> str:
    """The raw first repetition of field ``field`` of one segment occurrence; '' when absent."""
    if field >= len(seg):
        return ""
    return seg[field].split(f.message.delimiters.repetition)[0]


def _at(f: _Fields, seg: list[str], field: int, comp: int = 1) -> str | None:
    """Component ``comp`` of the first repetition of field ``field`` of a segment occurrence."""
    return f.leaf(_first_rep(f, seg, field), comp)


def _hd(f: _Fields, raw: str) -> str | None:
    """HD: namespace id (HD.1), else universal id (HD.2)."""
    return f.leaf(raw, 1) or f.leaf(raw, 2)


def _identifiers(f: _Fields, seg: str, field: int) -> tuple[Identifier, ...]:
    """CX, every repetition that has an ID (CX-1); explicit nulls are skipped."""
    found = []
    for raw in f.reps(seg, field):
        value = f.leaf(raw, 1)
        if value is None:
            continue
        found.append(Identifier(
            value=value,
            assigning_authority=f.leaf(raw, 4, 1) or f.leaf(raw, 4, 2),  # CX-4 HD.1, else HD.2
            identifier_type=f.leaf(raw, 5),
            assigning_facility=f.leaf(raw, 6, 1),
        ))
    return tuple(found)


def _name(f: _Fields) -> PersonName | None:
    """XPN, PID-5 first repetition: XPN-1.1 family (FN.1), XPN-2..5."""
    parts = dict(
        family=f.text("PID", 5, 1, 1),
        given=f.text("PID", 5, 2),
        middle=f.text("PID", 5, 3),
        suffix=f.text("PID", 5, 4),
        prefix=f.text("PID", 5, 5),
    )
    return PersonName(**parts) if any(parts.values()) else None


def _address(f: _Fields) -> Address | None:
    """XAD, PID-11 first repetition: XAD-1.1 street (SAD.1), XAD-2..6."""
    parts = dict(
        street=f.text("PID", 11, 1, 1),
        other=f.text("PID", 11, 2),
        city=f.text("PID", 11, 3),
        state=f.text("PID", 11, 4),
        zip=f.text("PID", 11, 5),
        country=f.text("PID", 11, 6),
    )
    return Address(**parts) if any(parts.values()) else None


def _phones(f: _Fields) -> tuple[str, ...]:
    """XTN, every PID-13 repetition: XTN-1, else XTN-12 (unformatted number)."""
    phones = (f.leaf(raw, 1) or f.leaf(raw, 12) for raw in f.reps("PID", 13))
    return tuple(p for p in phones if p)


def _provider(f: _Fields, raw: str) -> Provider | None:
    """XCN: XCN-1 id, XCN-2.1 family (FN.1), XCN-3 given."""
    parts = dict(id=f.leaf(raw, 1), family=f.leaf(raw, 2, 1), given=f.leaf(raw, 3))
    return Provider(**parts) if any(parts.values()) else None


def _first_provider(f: _Fields, seg: str, field: int) -> Provider | None:
    reps = f.reps(seg, field)
    return _provider(f, reps[0]) if reps else None


def _location(f: _Fields, raw: str) -> Location | None:
    """PL (first repetition): .1 point of care, .2 room, .3 bed, .4 facility HD.1, .7, .8."""
    raw = raw.split(f.message.delimiters.repetition)[0]
    parts = dict(
        point_of_care=f.leaf(raw, 1, 1),
        room=f.leaf(raw, 2, 1),
        bed=f.leaf(raw, 3, 1),
        facility=f.leaf(raw, 4, 1),
        building=f.leaf(raw, 7, 1),
        floor=f.leaf(raw, 8, 1),
    )
    return Location(**parts) if any(parts.values()) else None


def _coded(f: _Fields, seg: str, field: int) -> CodedValue | None:
    """CWE/CE, first repetition: code, text, coding system."""
    parts = dict(
        code=f.text(seg, field, 1), text=f.text(seg, field, 2), coding_system=f.text(seg, field, 3)
    )
    return CodedValue(**parts) if any(parts.values()) else None
