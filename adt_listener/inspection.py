"""What the listener decides about one message before it answers: AA, AE or AR, and why.

Pure and fast: this runs on every message on the hot path, so it reads only the fields the
listener needs (MSH-3/4/5/6/7/9/10/11/12/15/16/18, EVN-1, PID-3, MRG-1) with the ER7 reader.
Full mapping to the canonical event happens later in the normaliser.

The rules (documented in docs/acks.md):
- AR: unreadable bytes or MSH (encoding characters, segment names), MSH-9 missing its type or
  trigger, a type other than ADT, MSH-12 missing or not a 2.x version, MSH-11 not P/T/D.
- AE: MSH-7 present but not a timestamp, MSH-10 padded with spaces, EVN-1 not an event code,
  repeated EVN, no patient identifier at all (PID-3 and MRG-1 empty), a batch header segment inside a message,
  a segment that looks glued to the previous one with a space.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from adt_listener.hl7.ack import AckError, EchoHeader, ErrorLocation
from adt_listener.hl7.charset import CharsetError, decode_message
from adt_listener.hl7.er7 import Er7Error, Message

# DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]; some feeds omit the '.' before the
# fraction (20110613122406637), which is accepted.
_TS = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.?\d{1,4})?)?)?)?)?)?([+-]\d{4})?$")
_EVENT_CODE = re.compile(r"^[A-Z0-9]{3}$")
_VERSION = re.compile(r"^2\.\d+(\.\d+)?$")
_GLUED = re.compile(r" (EVN|PID|PD1|ROL|NK1|PV1|PV2|DG1|IN1|IN2|GT1|AL1|OBX|MRG|ZPI)\|")
_BATCH_SEGMENTS = frozenset({"FHS", "BHS", "BTS", "FTS"})
_TRAILERS = frozenset({"BTS", "FTS"})
_FIRST_LINE = re.compile(rb"\r|\n")


class Verdict(NamedTuple):
    """The listener's decision on one message.

    Attributes:
        code: AA, AE or AR.
        error: why, for AE/AR.
        header: what the ACK echoes (defaults when the MSH could not be read).
        message_type: MSH-9 as 'ADT^A01' ('' when unreadable).
        sending_facility: MSH-4.1 ('' when unreadable).
        control_id: MSH-10 ('' when absent).
        patient_key: routing key 'value@authority' (PID-3, else MRG-1), '' when none.
        codec: Python codec used to decode.
        enhanced: MSH-15/16 asked for enhanced-mode acknowledgement.
        accept_ack: MSH-15 (AL, NE, ER, SU; '' in original mode).
        application_ack: MSH-16 (AL, NE, ER, SU; '' in original mode).
    """

    code: str
    error: AckError | None
    header: EchoHeader
    message_type: str = ""
    sending_facility: str = ""
    control_id: str = ""
    patient_key: str = ""
    codec: str = "ascii"
    accept_ack: str = ""
    application_ack: str = ""

    @property
    def enhanced(self) -> bool:
        return bool(self.accept_ack or self.application_ack)


def _reject(code: str, segment: str, field: int | None, err: int,
            reason: str) -> tuple[str, AckError]:
    return code, AckError(ErrorLocation(segment, field), err, reason)


def inspect(raw: bytes) -> Verdict:
    """Decide AA/AE/AR for one message's bytes. Never raises."""
    try:
        text, codec = decode_message(raw)
    except CharsetError as exc:
        reason = exc.reason if "MSH-18" in exc.reason else f"MSH-18 {exc.charset}: {exc.reason}"
        return refused(raw, AckError(ErrorLocation("MSH", 18), 102, reason))
    try:
        msg = Message(text)
    except Er7Error as exc:
        err = AckError(ErrorLocation(exc.segment, exc.field), 102 if exc.field else 100,
                       exc.reason)
        return refused(raw, err)
    return _judge(msg, codec)


def refused(raw: bytes, error: AckError) -> Verdict:
    """An AR for a message that cannot be read, echoing its MSH when the MSH itself is readable.

    Interface engines match ACKs to messages by MSA-2, so even a reject for bad bytes, a bad
    segment or an oversize frame (``raw`` is then its first bytes) should carry MSH-10.
    """
    first = _FIRST_LINE.split(raw.removeprefix(b"\xef\xbb\xbf"), maxsplit=1)[0]
    try:
        msg = Message(first.decode("latin-1"))
    except Er7Error:
        return Verdict("AR", error, EchoHeader(), codec="latin-1")
    msh = _Msh(msg)
    f = _fields(msh)
    return Verdict("AR", error, _header(msh, msg, f),
                   message_type=f"{f.mtype}^{f.trigger}" if f.trigger else f.mtype,
                   sending_facility=f.facility[:MAX_FACILITY],
                   control_id=f.control_id[:MAX_CONTROL_ID], codec="latin-1")


class _Msh:
    """Direct reads of the MSH fields (the hot path reads a dozen of them per message)."""

    __slots__ = ("_fields", "_msg")

    def __init__(self, msg: Message) -> None:
        self._msg = msg
        self._fields = msg.segment("MSH") or ["MSH"]

    def raw(self, n: int) -> str:
        """The whole field MSH-n as written."""
        return self._fields[n] if n < len(self._fields) else ""

    def get(self, n: int, component: int = 1) -> str:
        """MSH-n, first repetition, component ``component``, escapes decoded."""
        d = self._msg.delimiters
        value = self.raw(n).split(d.repetition, 1)[0]
        if d.component in value:
            parts = value.split(d.component)
            value = parts[component - 1] if component <= len(parts) else ""
        elif component > 1:
            return ""
        if d.subcomponent in value:
            value = value.split(d.subcomponent, 1)[0]
        return self._msg.decode(value)


class _Fields(NamedTuple):
    """The MSH values the checks and the ACK need, each read once."""

    mtype: str  # MSH-9.1
    trigger: str  # MSH-9.2
    facility: str  # MSH-4.1
    control_id: str  # MSH-10
    version: str  # MSH-12.1
    processing: str  # MSH-11.1
    stamp: str  # MSH-7.1
    accept_ack: str  # MSH-15
    application_ack: str  # MSH-16


def _fields(msh: _Msh) -> _Fields:
    return _Fields(msh.get(9, 1), msh.get(9, 2), msh.get(4), msh.get(10), msh.get(12),
                   msh.get(11), msh.get(7), msh.get(15), msh.get(16))


def _header(msh: _Msh, msg: Message, f: _Fields) -> EchoHeader:
    return EchoHeader(
        sending_application=msh.raw(3), sending_facility=msh.raw(4),
        receiving_application=msh.raw(5), receiving_facility=msh.raw(6),
        trigger=f.trigger, control_id=msh.raw(10), processing_id=msh.raw(11),
        version=f.version, character_set=msh.raw(18), delimiters=msg.delimiters,
    )


def _judge(msg: Message, codec: str) -> Verdict:
    msh = _Msh(msg)
    f = _fields(msh)
    problem = _header_problem(f) or _body_problem(msg, f.trigger)
    key = patient_key(msg)
    if problem is None and len(key) > MAX_PATIENT_KEY:
        problem = ("AE", AckError(ErrorLocation("PID", 3), 102, "PID-3 identifier and "
                                  f"authority are longer than {MAX_PATIENT_KEY} characters"))
    if problem is None and not key:
        problem = ("AE", AckError(ErrorLocation("PID", 3), 101,
                                  "PID-3 patient identifier is missing (and no MRG-1)"))
    code, error = problem if problem else ("AA", None)
    return Verdict(
        code, error, _header(msh, msg, f),
        message_type=f"{f.mtype}^{f.trigger}" if f.trigger else f.mtype,
        sending_facility=f.facility, control_id=f.control_id, patient_key=key,
        codec=codec, accept_ack=f.accept_ack, application_ack=f.application_ack,
    )


def _header_problem(f: _Fields) -> tuple[str, AckError] | None:
    if not f.mtype:
        return _reject("AR", "MSH", 9, 101, "MSH-9 message type is missing")
    if f.mtype != "ADT":
        return _reject("AR", "MSH", 9, 200, f"MSH-9 message type {f.mtype} is not accepted on "
                       "this ADT interface")
    if not f.trigger:
        return _reject("AR", "MSH", 9, 201, "MSH-9 has no trigger event (MSG.2)")
    if not f.version:
        return _reject("AR", "MSH", 12, 101, "MSH-12 version id is missing")
    if not _VERSION.match(f.version):
        return _reject("AR", "MSH", 12, 203, f"MSH-12 version {f.version} is not supported "
                       "(2.1 to 2.8)")
    if f.processing[:1] not in ("", "P", "T", "D"):
        return _reject("AR", "MSH", 11, 202, "MSH-11 processing id must be P, T or D")
    too_long = _too_long(f)
    if too_long:
        return too_long
    if f.control_id != f.control_id.strip():
        return _reject("AE", "MSH", 10, 102, "MSH-10 control id has leading or trailing spaces")
    if f.stamp and not _TS.match(f.stamp):
        return _reject("AE", "MSH", 7, 102, "MSH-7 message time is not an HL7 timestamp")
    return None


# Column sizes of the message store (transcare/db/tables.py); longer values are refused here
# rather than failing a whole group commit on PostgreSQL.
MAX_FACILITY, MAX_CONTROL_ID, MAX_TYPE, MAX_PATIENT_KEY = 180, 199, 40, 250


def _too_long(f: _Fields) -> tuple[str, AckError] | None:
    if len(f.facility) > MAX_FACILITY:
        return _reject("AR", "MSH", 4, 102, f"MSH-4 sending facility is longer than "
                       f"{MAX_FACILITY} characters")
    if len(f.mtype) + len(f.trigger) + 1 > MAX_TYPE:
        return _reject("AR", "MSH", 9, 102, f"MSH-9 is longer than {MAX_TYPE} characters")
    if len(f.control_id) > MAX_CONTROL_ID:
        return _reject("AE", "MSH", 10, 102, f"MSH-10 control id is longer than "
                       f"{MAX_CONTROL_ID} characters")
    return None


def _body_problem(msg: Message, trigger: str) -> tuple[str, AckError] | None:
    names = list(msg.names)
    while names and names[-1] in _TRAILERS:
        names.pop()  # a batch trailer after the last segment is tolerated (BTS without BHS)
    for name in names:
        if name in _BATCH_SEGMENTS:
            return _reject("AE", name, None, 100, f"{name} batch segment found inside a message")
    if msg.count("EVN") > 1:
        return _reject("AE", "EVN", None, 100, "EVN segment repeated")
    evn1 = msg.get("EVN", 1)
    if evn1 and not _EVENT_CODE.match(evn1):
        return _reject("AE", "EVN", 1, 102, "EVN-1 event type code is not a 3-character code")
    glued = msg.search(_GLUED)
    if glued:
        return _reject("AE", glued.group(1), None, 100, f"{glued.group(1)} segment appears "
                       "glued to the previous segment with a space instead of a CR")
    return None


def patient_key(msg: Message) -> str:
    """The per-patient routing key: first non-empty PID-3 (then MRG-1) as value@authority."""
    for seg, field in (("PID", 3), ("MRG", 1)):
        for rep in msg.repetitions(seg, field):
            value = msg.decode(msg.component(rep, 1))
            if value:
                authority = msg.decode(msg.component(rep, 4)) or msg.decode(
                    msg.component(rep, 4, 2))
                return f"{value}@{authority}"
    return ""
