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

    An envelope segment (FHS, BHS, BTS, FTS) is dropped where a batch boundary can be: when the
    next non-envelope segment is an MSH, or there is none. One that sits inside a message (the
    next segment is not an MSH) stays in that message, where the listener rejects it. Lines
    before the first MSH that are not envelope segments mark the batch stray.
    """
    lines = [ln for ln in _LINES.split(payload.lstrip(b"\xef\xbb\xbf")) if ln.strip()]
    boundary = _boundaries(lines)
    header = lines[0] if lines else b""
    messages: list[list[bytes]] = []
    stray = False
    for i, line in enumerate(lines):
        if line[:3] == b"MSH":
            messages.append([line])
        elif i in boundary:
            continue
        elif messages:
            messages[-1].append(line)
        else:
            stray = True
    return Batch(header, [b"\r".join(m) + b"\r" for m in messages], stray)


def _boundaries(lines: list[bytes]) -> set[int]:
    """Indexes of envelope segments followed (past other envelope segments) by MSH or nothing."""
    result: set[int] = set()
    next_is_msh = True  # scanning backwards: what follows the current line
    for i in range(len(lines) - 1, -1, -1):
        head = lines[i][:3]
        if head in _HEADERS or head in _TRAILERS:
            if next_is_msh:
                result.add(i)
        else:
            next_is_msh = head == b"MSH"
    return result
