"""Strict validation of a feed's messages with hl7apy, for onboarding a new interface.

The hot path never uses hl7apy (a full parse costs about 12 ms a message, DESIGN.md section 6):
the listener reads only the fields it needs with :mod:`adt_listener.hl7.er7`. While a feed is
being connected, an interface analyst runs ``transcare validate FILE...`` to see everything the
HL7 standard says is wrong with the sample messages: structure (segment order and groups per
message structure), data types and field lengths, as hl7apy's strict validation reports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hl7apy.core import Message as Hl7apyMessage
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message
from hl7apy.validation import VALIDATION_LEVEL, Validator

SUPPORTED = ("2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8",
             "2.8.1", "2.8.2")


@dataclass(frozen=True)
class Finding:
    """One problem hl7apy found; ``where`` names the message structure element when it can."""

    where: str
    problem: str


def validate_strict(text: str) -> list[Finding]:
    """Validate one message (CR-separated text) against its HL7 version; [] when valid."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        message: Hl7apyMessage = parse_message(text, find_groups=True,
                                               validation_level=VALIDATION_LEVEL.TOLERANT)
    except HL7apyException as exc:
        return [Finding("message", _clean(exc))]
    if message.version not in SUPPORTED:
        return [Finding("MSH-12", f"hl7apy has no definition for version {message.version}")]
    report: list[Finding] = []
    try:
        Validator.validate(message, report_file=None)
    except HL7apyException as exc:
        report.extend(Finding(_where(e), _clean(e)) for e in _errors(exc))
    except (KeyError, ValueError, AttributeError) as exc:
        report.append(Finding("message", f"hl7apy could not validate: {exc}"))
    return report


def _errors(exc: HL7apyException) -> list[BaseException]:
    nested = getattr(exc, "args", ())
    if nested and isinstance(nested[0], list):
        return list(nested[0])
    return [exc]


def _where(exc: BaseException) -> str:
    text = str(exc)
    for token in text.replace(":", " ").split():
        if len(token) >= 3 and token[:3].isupper() and ("_" in token or token.isalnum()):
            return token
    return "message"


def _clean(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
