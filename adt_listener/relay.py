"""The outbox relay: stored, accepted messages to ``adt.raw.v1``, keyed by patient.

It publishes in store order, waits for the broker to acknowledge, then marks the rows published.
A crash between the two republishes those rows on restart (at-least-once); downstream processing
is idempotent by message id. While the broker is down the relay keeps retrying with backoff and
the listener keeps accepting: the store holds the backlog.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from adt_listener.store import MessageStore, PendingMessage
from schemas.topics import ADT_RAW, partition_key
from transcare import metrics

log = structlog.get_logger("adt_listener.relay")


class Publisher(Protocol):
    """Sends keyed records to a topic; ``publish`` returns when the broker acknowledged all."""

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...


def envelope(row: PendingMessage) -> bytes:
    """The ``raw_message.v1`` record for a stored message (schemas/raw_message.v1.schema.json)."""
    received = row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=UTC)
    return json.dumps({
        "schema_version": 1,
        "message_id": row.id,
        "sending_facility": row.sending_facility,
        "control_id": row.control_id or "",
        "message_type": row.message_type,
        "received_at": received.isoformat(),
        "charset": row.charset,
        "text": row.raw.decode(row.charset, "replace"),
    }, ensure_ascii=False).encode("utf-8")


class Relay:
    """Publishes the store's unpublished messages.

    Arguments:
        store: the message store (the outbox).
        connect: builds a started publisher; called again after a failure.
        batch: most messages per publish round.
        poll_s: how often to look even without a wake-up (catches other listeners' rows).
        republish_after_s: republish accepted messages still unprocessed this long after
            publishing (0 = never). For brokers without durable storage, whose restart loses
            published records.
    """

    def __init__(self, store: MessageStore, connect: Callable[[], Awaitable[Publisher]],
                 batch: int = 1000, poll_s: float = 1.0, republish_after_s: float = 0.0) -> None:
        self._republish_after = republish_after_s
        self._last_sweep = 0.0
        self._store = store
        self._connect = connect
        self._batch = batch
        self._poll = poll_s
        self._wake = asyncio.Event()
        self._publisher: Publisher | None = None
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                published = await self.publish_pending()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.RELAY_ERRORS.inc()
                log.warning("relay.publish_failed", error=type(exc).__name__, retry_in=backoff)
                await self._drop_publisher()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if published < self._batch:
                await self._idle()

    async def _idle(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), self._poll)
        except TimeoutError:
            pass
        self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish one round of unpublished messages; returns how many."""
        await self._sweep()
        rows = await self._store.unpublished(self._batch)
        if not rows:
            return 0
        if self._publisher is None:
            self._publisher = await self._connect()
        records = [(partition_key(r.patient_key, f"msg-{r.id}"), envelope(r)) for r in rows]
        await self._publisher.publish(ADT_RAW.name, records)
        await self._store.mark_published([r.id for r in rows], datetime.now(UTC))
        metrics.PUBLISHED.inc(len(rows))
        return len(rows)

    async def _sweep(self) -> None:
        now = time.monotonic()
        if not self._republish_after or now - self._last_sweep < self._republish_after / 2:
            return
        self._last_sweep = now
        cutoff = datetime.now(UTC) - timedelta(seconds=self._republish_after)
        requeued = await self._store.requeue_unprocessed(cutoff)
        if requeued:
            log.warning("relay.republishing_unprocessed", messages=requeued)

    async def _drop_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        close = getattr(publisher, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:  # already broken; nothing more to do
                pass

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        await self._drop_publisher()


