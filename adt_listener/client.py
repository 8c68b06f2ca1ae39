"""A small MLLP client: send messages, read their ACKs (``transcare send``, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from adt_listener.hl7.framing import Frame, MllpDecoder, wrap

COMMIT_CODES = frozenset({"CA", "CE", "CR"})


@dataclass(frozen=True)
class Reply:
    """One ACK frame as received: its MSA-1 code and text."""

    code: str
    text: str


def ack_code(payload: bytes) -> str:
    """MSA-1 of an ACK payload ('' if it has none)."""
    for line in payload.replace(b"\n", b"\r").split(b"\r"):
        if line.startswith(b"MSA") and len(line) > 4:
            return line[4:].split(line[3:4])[0].decode("ascii", "replace")
    return ""


def expects_application_ack(message: bytes, commit_code: str) -> bool:
    """After a commit ACK, whether MSH-16 asks for an application ACK too (table 0155)."""
    first = message.lstrip(b"\xef\xbb\xbf").replace(b"\n", b"\r").split(b"\r")[0]
    fields = first.split(first[3:4]) if len(first) > 3 else []
    accept = fields[14].decode("ascii", "replace") if len(fields) > 14 else ""
    condition = fields[15].decode("ascii", "replace") if len(fields) > 15 else ""
    ok = commit_code == "CA"

    def wanted(cond: str) -> bool:
        return (cond or "AL") == "AL" or (cond == "ER" and not ok) or (cond == "SU" and ok)

    # The listener always answers; the commit ACK is skipped only when the application ACK
    # is sent instead, so a commit ACK is followed by one only when both are wanted.
    return wanted(accept) and wanted(condition)


class MllpClient:
    """One persistent MLLP connection.

    Raises:
        ConnectionError: the server closed the connection before answering.
        TimeoutError: no answer within ``timeout`` seconds.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self._reader, self._writer, self._timeout = reader, writer, timeout
        self._decoder = MllpDecoder(16 << 20)
        self._frames: list[bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 30.0,
                      ssl_context: ssl.SSLContext | None = None) -> MllpClient:
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context)
        return cls(reader, writer, timeout)

    async def send(self, message: bytes) -> list[Reply]:
        """Send one message and return its reply frames (two in enhanced mode)."""
        self._writer.write(wrap(message))
        await self._writer.drain()
        first = await self.read_frame()
        replies = [Reply(ack_code(first), first.decode("utf-8", "replace"))]
        code = replies[0].code
        if code in COMMIT_CODES and expects_application_ack(message, code):
            second = await self.read_frame()
            replies.append(Reply(ack_code(second), second.decode("utf-8", "replace")))
        return replies

    async def send_raw(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def read_frame(self) -> bytes:
        while not self._frames:
            data = await asyncio.wait_for(self._reader.read(65536), self._timeout)
            if not data:
                raise ConnectionError("server closed the connection")
            self._frames.extend(
                e.payload for e in self._decoder.feed(data) if isinstance(e, Frame)
            )
        return self._frames.pop(0)

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
