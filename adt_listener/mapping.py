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
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from adt_listener.hl7.er7 import Message
from adt_listener.hl7.escapes import unescape
from adt_listener.hl7.timestamps import TimestampError, parse_hl7_date, parse_hl7_datetime
from schemas.adt_event import SCHEMA_VERSION, AdtEvent, Identifier

Doc = dict[str, Any]  # one part of the event (a Header, a Patient, ...) before validation


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
    """Reads leaf values of one message: decoded, stripped, '' as None; timestamps checked.

    This is the normaliser's hot path, so leaves are not read one call at a time: a segment's
    scalar fields are decoded together (:meth:`values`) and a composite field is split and
    decoded once (:meth:`parts`); the mapping then indexes the lists. Only values carrying an
    escape sequence, a subcomponent or the explicit null take the slower :meth:`clean`.
    """

    __slots__ = ("message", "tz", "_rep", "_comp", "_sub", "_esc")

    def __init__(self, message: Message, tz: ZoneInfo) -> None:
        self.message = message
        self.tz = tz
        d = message.delimiters
        self._rep, self._comp, self._sub, self._esc = (
            d.repetition, d.component, d.subcomponent, d.escape)

    def values(self, seg: list[str] | None, numbers: tuple[int, ...]) -> list[str | None]:
        """Fields ``numbers`` of one segment occurrence, each as component 1, subcomponent 1
        of its first repetition, decoded; None when blank or absent."""
        if seg is None:
            return [None] * len(numbers)
        n = len(seg)
        rep, comp, sub, esc = self._rep, self._comp, self._sub, self._esc
        # Most fields are empty or one plain value: only the others are split.
        return [
            None if k >= n or not (v := seg[k])
            else (v.strip() or None) if (rep not in v and comp not in v and sub not in v
                                         and esc not in v and v != '""')
            else self.clean(v.split(rep, 1)[0].split(comp, 1)[0].split(sub, 1)[0])
            for k in numbers
        ]

    def parts(self, raw: str, size: int) -> list[str | None]:
        """Components 1 .. ``size`` of a raw repetition (subcomponent 1 of each), decoded;
        None when blank or absent. ``parts(raw, 3)[1]`` is component 2."""
        sub, esc = self._sub, self._esc
        out = [
            None if not c
            else (c.strip() or None) if sub not in c and esc not in c and c != '""'
            else self.clean(c.split(sub, 1)[0])
            for c in raw.split(self._comp, size)[:size]
        ]
        if len(out) < size:
            out.extend([None] * (size - len(out)))
        return out

    def pick(self, raw: str, comp: int, sub: int) -> str | None:
        """Component ``comp``, subcomponent ``sub`` of a raw repetition, decoded."""
        comps = raw.split(self._comp)
        if comp > len(comps):
            return None
        subs = comps[comp - 1].split(self._sub)
        return self.clean(subs[sub - 1]) if sub <= len(subs) else None

    def clean(self, value: str) -> str | None:
        """A raw leaf decoded and stripped; the explicit null ``""`` and blanks are None."""
        if not value or value == '""':
            return None
        if self._esc in value:
            value = unescape(value, self.message.delimiters)
        return value.strip() or None

    def first(self, seg: list[str] | None, field: int) -> str:
        """The raw first repetition of field ``field`` of one segment occurrence, or ''."""
        if seg is None or field >= len(seg):
            return ""
        raw = seg[field]
        return raw.split(self._rep, 1)[0] if self._rep in raw else raw

    def reps(self, seg: list[str] | None, field: int) -> list[str]:
        """Every repetition of field ``field`` of one segment occurrence, raw; [] when empty."""
        if seg is None or field >= len(seg) or not seg[field]:
            return []
        return seg[field].split(self._rep)

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
    return AdtEvent.model_validate(
        map_event(message, message_id=message_id, received_at=received_at, tz=tz))


def map_event(message: Message, *, message_id: int, received_at: datetime, tz: ZoneInfo) -> Doc:
    """The event :func:`to_adt_event` validates, as a plain dict: every field of every part,
    in the models' field order, with the models' types (so :func:`event_json` writes the JSON
    the model writes). Raises what :func:`to_adt_event` raises, but never ValidationError."""
    f = _Fields(message, tz)
    header = _map_header(f)
    patient = _map_patient(f)
    merge = _map_merge(f)
    key = patient_key(patient["identifiers"], merge["prior_identifiers"] if merge else ())
    if not key:
        raise MappingError("PID", 3, "PID-3 has no patient identifier and there is no MRG-1")
    return dict(
        schema_version=SCHEMA_VERSION,
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


def event_json(event: Doc) -> bytes:
    """An event from :func:`map_event` as ``adt.events.v1`` JSON: the bytes
    ``AdtEvent.model_validate(event).model_dump_json()`` gives (a test holds the two equal over
    the corpus and 100,000 mutated messages), without building the model: validating and
    dumping it was a fifth of the normaliser (docs/performance.md). A time whose zone offset
    has seconds (local mean time, before standard time: year 1850 in Chicago) goes through the
    model, which writes the offset truncated to the minute where orjson would round it."""
    if _whole_minute_offsets(event):
        return orjson.dumps(event, option=orjson.OPT_UTC_Z)
    return AdtEvent.model_validate(event).model_dump_json().encode()


def _whole_minute_offsets(event: Doc) -> bool:
    """Whether every time of the event has a UTC offset of whole minutes."""
    header, info, patient, visit = event["header"], event["event"], event["patient"], event["visit"]
    times = [event["received_at"], header["message_time"], patient["death_time"]]
    if info is not None:
        times += (info["recorded_at"], info["occurred_at"])
    if visit is not None:
        times += (visit["admitted_at"], visit["discharged_at"])
    for at in times:
        if at is not None and (offset := at.utcoffset()) is not None and offset.seconds % 60:
            return False
    return True


def event_id(header: Doc, message_id: int) -> str:
    """``{MSH-4}|{MSH-10}``, or ``msg-{message_id}`` when MSH-10 is empty."""
    if header["control_id"]:
        return f"{header['sending_facility'] or ''}|{header['control_id']}"
    return f"msg-{message_id}"


def patient_key(identifiers: Sequence[Identifier | Doc],
                prior: Sequence[Identifier | Doc] = ()) -> str:
    """The Kafka key: ``value@authority`` of the first PID-3 identifier, else of MRG-1, else ''."""
    first = identifiers[:1] or prior[:1]
    if not first:
        return ""
    cx = first[0]
    value, authority = ((cx["value"], cx["assigning_authority"]) if isinstance(cx, dict)
                        else (cx.value, cx.assigning_authority))
    return f"{value}@{authority or ''}"


def _map_header(f: _Fields) -> Doc:
    """MSH. The message type (MSH-9.1) is required."""
    msh = f.message.segment("MSH")
    control_id, processing_id, version, character_set = f.values(msh, (10, 11, 12, 18))
    msg = f.parts(f.first(msh, 9), 3)
    if msg[0] is None:
        raise MappingError("MSH", 9, "MSH-9 message type is empty")
    return dict(
        # MSH-3 to MSH-6 (HD) are read from the whole field: they do not repeat.
        sending_application=_hd(f, _whole(msh, 3)),
        sending_facility=_hd(f, _whole(msh, 4)),
        receiving_application=_hd(f, _whole(msh, 5)),
        receiving_facility=_hd(f, _whole(msh, 6)),
        message_time=f.time("MSH", 7, "message time"),
        message_type=msg[0],  # MSH-9.1 MSG.1
        trigger_event=msg[1],  # MSG.2
        message_structure=msg[2],  # MSG.3
        control_id=control_id,  # MSH-10
        version=version,  # MSH-12.1
        processing_id=processing_id,  # MSH-11.1
        character_set=character_set,  # MSH-18, first repetition
    )


def _whole(seg: list[str] | None, field: int) -> str:
    """The raw text of a whole field of one segment occurrence (all repetitions)."""
    return seg[field] if seg is not None and field < len(seg) else ""


def _map_event(f: _Fields) -> Doc | None:
    """EVN, or None when the message has none."""
    evn = f.message.segment("EVN")
    if evn is None:
        return None
    event_type_code, event_facility = f.values(evn, (1, 7))
    return dict(
        event_type_code=event_type_code,  # EVN-1
        recorded_at=f.time("EVN", 2, "recorded time"),
        occurred_at=f.time("EVN", 6, "event occurred time"),
        event_facility=event_facility,  # EVN-7.1
    )


def _map_patient(f: _Fields) -> Doc:
    """The first PID; an empty Patient when there is none (e.g. A06 carrying only MRG)."""
    pid = f.message.segment("PID")
    sex, account_number, death_indicator = f.values(pid, (8, 18, 30))
    return dict(
        identifiers=_identifiers(f, pid, 3),
        name=_name(f, pid),
        birth_date=f.day("PID", 7, "birth date"),
        sex=sex,  # PID-8
        address=_address(f, pid),
        phones=_phones(f, pid),
        account_number=account_number,  # PID-18.1
        death_time=f.time("PID", 29, "death time"),
        death_indicator={"Y": True, "N": False}.get((death_indicator or "").upper()),  # PID-30
    )


def _map_primary_care_provider(f: _Fields) -> Doc | None:
    """PD1-4, first repetition."""
    return _provider(f, f.first(f.message.segment("PD1"), 4))


def _map_roles(f: _Fields) -> tuple[Doc, ...]:
    """Every ROL: ROL-3.1 role code, ROL-4 person (first repetition)."""
    return tuple(
        dict(role_code=f.values(rol, (3,))[0], person=_provider(f, f.first(rol, 4)))
        for rol in f.message.all("ROL")
    )


def _map_visit(f: _Fields) -> Doc | None:
    """PV1 (with PV2-3 admit reason), or None when the message has no PV1."""
    pv1 = f.message.segment("PV1")
    if pv1 is None:
        return None
    (patient_class, admission_type, hospital_service, admit_source, visit_number,
     discharge_disposition, discharged_to_location) = f.values(pv1, (2, 4, 10, 14, 19, 36, 37))
    return dict(
        patient_class=patient_class,  # PV1-2
        location=_location(f, _whole(pv1, 3)),
        admission_type=admission_type,  # PV1-4
        prior_location=_location(f, _whole(pv1, 6)),
        attending_doctor=_provider(f, f.first(pv1, 7)),
        hospital_service=hospital_service,  # PV1-10
        admit_source=admit_source,  # PV1-14
        admitting_doctor=_provider(f, f.first(pv1, 17)),
        visit_number=visit_number,  # PV1-19.1
        discharge_disposition=discharge_disposition,  # PV1-36
        discharged_to_location=discharged_to_location,  # PV1-37.1
        admitted_at=f.time("PV1", 44, "admit time"),
        discharged_at=f.time("PV1", 45, "discharge time"),
        admit_reason=_coded(f, f.first(f.message.segment("PV2"), 3)),  # PV2-3
    )


def _map_diagnoses(f: _Fields) -> tuple[Doc, ...]:
    """Every DG1 that carries anything."""
    found = []
    for dg1 in f.message.all("DG1"):
        description, diagnosis_type, priority = f.values(dg1, (4, 6, 15))
        code = f.parts(f.first(dg1, 3), 3)  # DG1-3 CWE
        parts = dict(
            code=code[0],
            text=code[1] or description,  # DG1-3.2, else DG1-4
            coding_system=code[2],
            diagnosis_type=diagnosis_type,  # DG1-6
            priority=priority,  # DG1-15
        )
        if any(parts.values()):
            found.append(parts)
    return tuple(found)


def _map_insurance(f: _Fields) -> tuple[Doc, ...]:
    """Every IN1 that carries anything; the member id is IN1-49.1, else IN1-36."""
    found = []
    for in1 in f.message.all("IN1"):
        plan_id, company_id, company_name, insured_id, member_id = f.values(
            in1, (2, 3, 4, 36, 49))
        parts = dict(plan_id=plan_id, company_id=company_id, company_name=company_name,
                     member_id=member_id or insured_id)
        if any(parts.values()):
            found.append(parts)
    return tuple(found)


def _map_merge(f: _Fields) -> Doc | None:
    """MRG (the first), or None when absent."""
    mrg = f.message.segment("MRG")
    if mrg is None:
        return None
    prior_account, prior_visit_number = f.values(mrg, (3, 5))
    return dict(
        prior_identifiers=_identifiers(f, mrg, 1),
        prior_account=prior_account,  # MRG-3.1
        prior_visit_number=prior_visit_number,  # MRG-5.1
    )


# --- HL7 data types -------------------------------------------------------------------------


def _hd(f: _Fields, raw: str) -> str | None:
    """HD: namespace id (HD.1), else universal id (HD.2)."""
    hd = f.parts(raw, 2)
    return hd[0] or hd[1]


def _identifiers(f: _Fields, seg: list[str] | None, field: int) -> tuple[Doc, ...]:
    """CX, every repetition that has an ID (CX-1); explicit nulls are skipped."""
    found = []
    for raw in f.reps(seg, field):
        cx = f.parts(raw, 6)
        if cx[0] is None:
            continue
        found.append(dict(
            value=cx[0],
            # CX-4 HD.1, else HD.2
            assigning_authority=cx[3] or (f.pick(raw, 4, 2) if f._sub in raw else None),
            identifier_type=cx[4],  # CX-5
            assigning_facility=cx[5],  # CX-6.1
        ))
    return tuple(found)


def _name(f: _Fields, pid: list[str] | None) -> Doc | None:
    """XPN, PID-5 first repetition: XPN-1.1 family (FN.1), XPN-2..5."""
    xpn = f.parts(f.first(pid, 5), 5)
    if not any(xpn):
        return None
    return dict(family=xpn[0], given=xpn[1], middle=xpn[2], suffix=xpn[3],
                      prefix=xpn[4])


def _address(f: _Fields, pid: list[str] | None) -> Doc | None:
    """XAD, PID-11 first repetition: XAD-1.1 street (SAD.1), XAD-2..6."""
    xad = f.parts(f.first(pid, 11), 6)
    if not any(xad):
        return None
    return dict(street=xad[0], other=xad[1], city=xad[2], state=xad[3], zip=xad[4],
                   country=xad[5])


def _phones(f: _Fields, pid: list[str] | None) -> tuple[str, ...]:
    """XTN, every PID-13 repetition: XTN-1, else XTN-12 (unformatted number)."""
    found = []
    for raw in f.reps(pid, 13):
        xtn = f.parts(raw, 12)
        phone = xtn[0] or xtn[11]
        if phone:
            found.append(phone)
    return tuple(found)


def _provider(f: _Fields, raw: str) -> Doc | None:
    """XCN: XCN-1 id, XCN-2.1 family (FN.1), XCN-3 given; None when blank."""
    if not raw:
        return None
    xcn = f.parts(raw, 3)
    if not any(xcn):
        return None
    return dict(id=xcn[0], family=xcn[1], given=xcn[2])


def _location(f: _Fields, raw: str) -> Doc | None:
    """PL (first repetition): .1 point of care, .2 room, .3 bed, .4 facility HD.1, .7, .8."""
    pl = f.parts(raw.split(f._rep, 1)[0], 8)
    if not any(pl[:4]) and not pl[6] and not pl[7]:  # PL.5 and PL.6 are not mapped
        return None
    return dict(point_of_care=pl[0], room=pl[1], bed=pl[2], facility=pl[3],
                    building=pl[6], floor=pl[7])


def _coded(f: _Fields, raw: str) -> Doc | None:
    """CWE/CE, first repetition: code, text, coding system."""
    cwe = f.parts(raw, 3)
    if not any(cwe):
        return None
    return dict(code=cwe[0], text=cwe[1], coding_system=cwe[2])
