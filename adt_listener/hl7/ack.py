"""Building HL7 acknowledgements (original and enhanced mode) that mirror the sender.

The ACK uses the sender's delimiters, MSH-12 version and MSH-18 character set, swaps sending and
receiving application/facility, and echoes MSH-10 in MSA-2. Errors are reported in an ERR
segment carrying both the pre-2.5 form (ERR-1, ELD) and the 2.5+ form (ERR-2 location, ERR-3
HL7 table 0357 code, ERR-4 severity, ERR-8 user message), so any receiver can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from adt_listener.hl7.er7 import DEFAULT_DELIMITERS, Delimiters
from adt_listener.hl7.escapes import escape

# HL7 table 0357 (message error condition codes).
ERROR_CODES = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}


@dataclass(frozen=True, slots=True)
class ErrorLocation:
    """Where an error is: segment, its occurrence (1-based) and field number (ERR-2, ERL)."""

    segment: str
    field: int | None = None
    sequence: int = 1

    def __str__(self) -> str:
        return f"{self.segment}-{self.field}" if self.field else self.segment


@dataclass(frozen=True, slots=True)
class AckError:
    """One error to report: location, table 0357 code and a reason an analyst can act on."""

    location: ErrorLocation
    code: int
    reason: str


class EchoHeader(NamedTuple):
    """What an ACK copies from the message it acknowledges (MSH fields, raw)."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    character_set: str = ""
    delimiters: Delimiters = DEFAULT_DELIMITERS


@lru_cache(maxsize=4)
def _second(stamp: datetime) -> str:
    return stamp.strftime("%Y%m%d%H%M%S%z")


def hl7_time(now: datetime) -> str:
    """``now`` as an HL7 DTM with its UTC offset (cached per second: strftime is slow)."""
    return _second(now.replace(microsecond=0))


def build_ack(
    header: EchoHeader,
    code: str,
    ack_control_id: str,
    now: datetime,
    error: AckError | None = None,
) -> str:
    """Build an ACK message as text with CR segment separators.

    Arguments:
        header: the fields echoed from the acknowledged message.
        code: MSA-1: AA/AE/AR (original or application ACK) or CA/CE/CR (commit ACK).
        ack_control_id: MSH-10 of the ACK itself.
        now: MSH-7 of the ACK.
        error: the error to report in MSA-3 and ERR, for AE/AR/CE/CR.
    """
    d = header.delimiters
    f = d.field
    trigger = f"ACK{d.component}{header.trigger}{d.component}ACK" if header.trigger else "ACK"
    msh = f.join([
        "MSH", d.encoding_characters, header.receiving_application, header.receiving_facility,
        header.sending_application, header.sending_facility, hl7_time(now), "",
        trigger, ack_control_id, header.processing_id or "P", header.version or "2.5",
        "", "", "", "", "", header.character_set,
    ]).rstrip(f)
    # MSA-2 echoes MSH-10 exactly as received (raw: its escapes are already in the sender's form).
    msa = [f"MSA{f}{code}{f}{header.control_id}"]
    segments = [msh]
    if error is None:
        segments.append(msa[0])
    else:
        segments.append(msa[0] + f + escape(error.reason[:80], d))
        segments.append(_err_segment(error, d))
    return "\r".join(segments) + "\r"


def _err_segment(error: AckError, d: Delimiters) -> str:
    c, s, f = d.component, d.subcomponent, d.field
    loc = error.location
    name = ERROR_CODES.get(error.code, "")
    field = str(loc.field) if loc.field else ""
    # ERR-1 (ELD, before v2.5): segment^sequence^field^code&text&HL70357
    eld = c.join([loc.segment, str(loc.sequence), field, s.join([str(error.code), name, "HL70357"])])
    # ERR-2 (ERL, v2.5+): segment^sequence^field
    erl = c.join([loc.segment, str(loc.sequence), field]) if loc.segment else ""
    # ERR-3 (CWE, table 0357), ERR-4 severity E, ERR-8 user message.
    code = c.join([str(error.code), name, "HL70357"])
    return f.join(["ERR", eld, erl, code, "E", "", "", "", escape(error.reason, d)])
