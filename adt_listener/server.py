"""The asyncio MLLP server: frames in, durable store, ACKs out.

One :class:`MllpConnection` per client. Frames are handled strictly in order per connection:
decode and judge (:mod:`adt_listener.inspection`), commit to the store through the group-commit
writer, then write the ACK. Nothing a client sends can stop the server: oversize frames get an
AR and are discarded, junk is logged and skipped, idle and over-limit connections are closed.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog

from adt_listener.acknowledge import Responder
from adt_listener.hl7.framing import Frame, FrameTooLarge, JunkDiscarded, MllpDecoder, wrap
from transcare import metrics

log = structlog.get_logger("adt_listener.server")
_conn_ids = itertools.count(1)


@dataclass(frozen=True)
class ServerLimits:
    max_message_bytes: int = 1 << 20
    idle_timeout_s: float = 300.0
    max_connections: int = 500
    max_pipelined: int = 64


class MllpConnection(asyncio.Protocol):
    """One client connection: frames decoded as bytes arrive, answered in order."""

    def __init__(self, server: MllpServer) -> None:
        self._server = server
        self._decoder = MllpDecoder(server.limits.max_message_bytes)
        self._pending: deque[Frame | FrameTooLarge] = deque()
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._paused = False
        self._in_flight = 0
        self.id = next(_conn_ids)
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        if not self._server.admit(self):
            transport = self._transport
            metrics.CONNECTIONS_REFUSED.labels("limit").inc()
            log.warning("mllp.connection_refused", conn=self.id, reason="connection limit")
            transport.abort()
            return
        metrics.CONNECTIONS.inc()
        log.info("mllp.connected", conn=self.id, peer=self.peer)
        self._touch()

    def data_received(self, data: bytes) -> None:
        self._touch()
        for event in self._decoder.feed(data):
            if isinstance(event, JunkDiscarded):
                metrics.FRAMING_ERRORS.labels("junk").inc()
                log.warning("mllp.junk_discarded", conn=self.id, bytes=event.size)
                continue
            if isinstance(event, FrameTooLarge):
                metrics.FRAMING_ERRORS.labels("oversize").inc()
            if self._pending or self._task or self._server.responder.needs_async(event):
                # Batches and oversize frames take the async path; whatever follows them on
                # this connection queues behind, so replies keep the order of the frames.
                self._pending.append(event)
            else:
                self._answer_now(event)  # type: ignore[arg-type]
        if self._pending and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        self._apply_backpressure()

    def _answer_now(self, frame: Frame) -> None:
        """The hot path: judge the message now, write its ACK from the commit callback."""
        started = time.perf_counter()
        self._in_flight += 1

        def reply(result: list[bytes] | BaseException) -> None:
            self._in_flight -= 1
            if isinstance(result, BaseException):
                self._store_failed(result)
            else:
                self._write(result, started)
            self._apply_backpressure()

        self._server.responder.respond_nowait(frame.payload, self.peer, reply, self.id)

    def _apply_backpressure(self) -> None:
        queued = len(self._pending) + self._in_flight
        limit = self._server.limits.max_pipelined
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not self._paused and queued > limit:
            self._paused = True
            transport.pause_reading()
        elif self._paused and queued <= limit // 2:
            self._paused = False
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle:
            self._idle.cancel()
        if self._server.release(self):
            metrics.CONNECTIONS.dec()
        if self._decoder.in_frame:
            metrics.FRAMING_ERRORS.labels("partial").inc()
            log.warning("mllp.disconnected_mid_frame", conn=self.id,
                        bytes=self._decoder.buffered)
        log.info("mllp.disconnected", conn=self.id)

    def _touch(self) -> None:
        if self._idle:
            self._idle.cancel()
        timeout = self._server.limits.idle_timeout_s
        self._idle = asyncio.get_running_loop().call_later(timeout, self._on_idle)

    def _on_idle(self) -> None:
        log.info("mllp.idle_timeout", conn=self.id)
        if self._transport:
            self._transport.close()

    async def _drain(self) -> None:
        try:
            while self._pending:
                event = self._pending.popleft()
                await self._answer(event)
                self._apply_backpressure()
        finally:
            self._task = None

    async def _answer(self, event: Frame | FrameTooLarge) -> None:
        started = time.perf_counter()
        try:
            replies = await self._server.responder.respond(event, self.peer, self.id)
        except Exception as exc:
            self._store_failed(exc)
            return
        self._write(replies, started)

    def _write(self, replies: list[bytes], started: float) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(b"".join(wrap(r) for r in replies))
        metrics.ACK_LATENCY.observe(time.perf_counter() - started)

    def _store_failed(self, exc: BaseException) -> None:
        """The store is unavailable: no ACK may be sent, so close; the sender will resend."""
        log.error("mllp.store_unavailable", conn=self.id, error=type(exc).__name__)
        if self._transport:
            self._transport.close()
        self._pending.clear()


class MllpServer:
    """Owns the listening socket, the connection registry and the limits."""

    def __init__(self, responder: Responder, limits: ServerLimits,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.responder = responder
        self.limits = limits
        self._ssl = ssl_context
        self._connections: set[MllpConnection] = set()
        self._server: asyncio.Server | None = None

    def admit(self, conn: MllpConnection) -> bool:
        if len(self._connections) >= self.limits.max_connections:
            return False
        self._connections.add(conn)
        return True

    def release(self, conn: MllpConnection) -> bool:
        if conn in self._connections:
            self._connections.discard(conn)
            return True
        return False

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        factory: Callable[[], MllpConnection] = lambda: MllpConnection(self)  # noqa: E731
        self._server = await asyncio.get_running_loop().create_server(
            factory, host, port, ssl=self._ssl, reuse_address=True, backlog=512
        )
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            for conn in list(self._connections):
                if conn._transport:
                    conn._transport.close()
            await self._server.wait_closed()
