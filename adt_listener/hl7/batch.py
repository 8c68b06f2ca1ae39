"""HL7 batch envelopes (FHS/BHS ... BTS/FTS) inside one MLLP frame, split message by message."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINES = re.compile(rb"\r\n|\r|\n")
_HEADERS = (b"FHS", b"BHS")
_TRAILERS = (b"BTS", b"FTS")


@dataclass(frozen=True, slots=True)
class Batch:
    """A frame that opened with FHS or BHS.

    Attributes:
        header: the first header segment (FHS or BHS), used to mirror delimiters in the reply.
        messages: each message's bytes (segments joined with CR), in order.
        stray: bytes before the first MSH that are not envelope segments (the batch is bad).
    """

    header: bytes
    messages: list[bytes] = field(default_factory=list)
    stray: bool = False


def is_batch(payload: bytes) -> bool:
    return payload.lstrip(b"\xef\xbb\xbf \r\n")[:3] in _HEADERS


def split_batch(payload: bytes) -> Batch:
    """Split a batch payload into messages.

    Envelope segments before the first MSH and after the last message are dropped; one that
    appears between an MSH and the next MSH stays inside that message, where the listener
    rejects it. Lines before the first MSH that are not envelope segments mark the batch stray.
    """
    lines = [ln for ln in _LINES.split(payload.lstrip(b"\xef\xbb\xbf")) if ln.strip()]
    while lines and lines[-1][:3] in _TRAILERS:
        lines.pop()
    header = lines[0] if lines else b""
    messages: list[list[bytes]] = []
    stray = False
    for line in lines:
        if line[:3] == b"MSH":
            messages.append([line])
        elif messages:
            messages[-1].append(line)
        elif line[:3] not in _HEADERS:
            stray = True
    return Batch(header, [b"\r".join(m) + b"\r" for m in messages], stray)
