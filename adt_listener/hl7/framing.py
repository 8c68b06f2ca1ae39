"""MLLP block framing: <VT> payload <FS><CR>, fed bytes as they arrive from a socket.

The decoder knows only bytes. It tolerates what real senders do: bytes before the start block
or between frames (LF, NUL, whitespace, junk), a missing trailing CR after <FS>, frames split
across reads and several frames in one read. A frame larger than ``max_frame`` is reported as
:class:`FrameTooLarge` once and its remaining bytes are discarded up to the next end block, so
memory stays bounded whatever the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"
TRAILER = END_BLOCK + CARRIAGE_RETURN


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete MLLP payload (without the framing bytes)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameTooLarge:
    """A frame exceeded the maximum size; its bytes were discarded but its first ``head``."""

    size_seen: int
    head: bytes = b""


@dataclass(frozen=True, slots=True)
class JunkDiscarded:
    """Bytes outside any frame that were not plain whitespace were discarded."""

    size: int


FramingEvent = Frame | FrameTooLarge | JunkDiscarded

_WHITESPACE = frozenset(b" \t\r\n\x00")


def wrap(payload: bytes) -> bytes:
    """Frame one payload for sending."""
    return START_BLOCK + payload + TRAILER


class MllpDecoder:
    """Incremental MLLP decoder.

    Arguments:
        max_frame: largest payload accepted, in bytes.

    Feed it with :meth:`feed`; it returns the framing events the new bytes completed.
    :attr:`in_frame` tells whether a frame is open (a disconnect now means a partial frame).
    """

    __slots__ = ("_buf", "_head", "_in_frame", "_max", "_oversize", "_seen")
    HEAD_BYTES = 4096  # kept from an oversize frame, so its reject can echo the MSH

    def __init__(self, max_frame: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._head = b""
        self._in_frame = False
        self._oversize = False
        self._seen = 0
        self._max = max_frame

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[FramingEvent]:
        events: list[FramingEvent] = []
        view = data
        while view:
            view = self._step(view, events)
        return events

    def _step(self, data: bytes, events: list[FramingEvent]) -> bytes:
        if not self._in_frame:
            return self._seek_start(data, events)
        end = data.find(END_BLOCK)
        if end < 0:
            self._absorb(data)
            return b""
        self._absorb(data[:end])
        self._finish(events)
        rest = data[end + 1 :]
        # The CR after <FS> is optional in practice; skip it when present.
        return rest[1:] if rest[:1] == CARRIAGE_RETURN else rest

    def _seek_start(self, data: bytes, events: list[FramingEvent]) -> bytes:
        start = data.find(START_BLOCK)
        junk = data if start < 0 else data[:start]
        if junk and not all(b in _WHITESPACE for b in junk):
            events.append(JunkDiscarded(len(junk)))
        if start < 0:
            return b""
        self._in_frame = True
        self._oversize = False
        self._seen = 0
        return data[start + 1 :]

    def _absorb(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        if self._oversize:
            if len(self._head) < self.HEAD_BYTES:
                self._head += chunk[: self.HEAD_BYTES - len(self._head)]
            return
        if self._seen > self._max:
            # Keep only the first HEAD_BYTES (bounded whatever the frame's size).
            self._oversize = True
            self._head = (bytes(self._buf) + chunk)[: self.HEAD_BYTES]
            self._buf.clear()
            return
        self._buf += chunk

    def _finish(self, events: list[FramingEvent]) -> None:
        if self._oversize:
            events.append(FrameTooLarge(self._seen, self._head))
            self._head = b""
        else:
            events.append(Frame(bytes(self._buf)))
        self._buf.clear()
        self._in_frame = False
        self._oversize = False
        self._seen = 0


def split_file(data: bytes) -> list[bytes]:
    """Split a file of HL7 messages (not MLLP framed) into messages.

    Accepts CR, LF or CRLF segment separators, blank lines and ``#`` comment lines between
    messages, stray MLLP start/end bytes, and FHS/BHS batch envelopes (whose header and trailer
    segments are dropped: each MSH starts a message). Returns each message with CR separators.
    """
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    messages: list[list[bytes]] = []
    for raw in text.split(b"\r"):
        line = raw.lstrip(b"\x0b\x1c\x00 \t").rstrip(b"\x0b\x1c\x00")
        if not line.strip() or line.startswith(b"#"):
            continue
        head = line[:3]
        if head in (b"FHS", b"BHS", b"BTS", b"FTS"):
            continue
        if head == b"MSH" or not messages:
            messages.append([])
        messages[-1].append(line)
    return [b"\r".join(segs) + b"\r" for segs in messages]
