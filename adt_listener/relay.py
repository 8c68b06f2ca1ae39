"""The outbox relay: stored, accepted messages to ``adt.raw.v1``, keyed by patient.

It publishes in store order, waits for the broker to acknowledge, then marks the rows published
(a moment later, unless the normaliser marked them first). A crash between the two republishes
those rows on restart (at-least-once); downstream processing is idempotent by message id.
While the broker is down the relay keeps retrying with backoff and the listener keeps
accepting: the store holds the backlog.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import orjson
import structlog

from adt_listener.store import DEADLETTERED, MessageStore, Outcome, PendingMessage
from schemas.topics import ADT_RAW, partition_key
from transcare import metrics

log = structlog.get_logger("adt_listener.relay")


class RecordTooLarge(Exception):
    """The broker refuses a record for its size (raised by a :class:`Publisher`)."""


class Publisher(Protocol):
    """Sends keyed records to a topic; ``publish`` returns when the broker acknowledged all.

    Raises :class:`RecordTooLarge` when the broker refuses a record for its size.
    """

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...


def envelope(row: PendingMessage) -> bytes:
    """The ``raw_message.v1`` record for a stored message (schemas/raw_message.v1.schema.json)."""
    received = row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=UTC)
    return orjson.dumps({
        "schema_version": 1,
        "message_id": row.id,
        "sending_facility": row.sending_facility,
        "control_id": row.control_id or "",
        "message_type": row.message_type,
        "received_at": received.isoformat(),
        "charset": row.charset,
        "text": row.raw.decode(row.charset, "replace"),
    })


class Relay:
    """Publishes stored, accepted messages to ``adt.raw.v1``.

    Fresh messages come from the writer right after their commit (:meth:`handoff`), so the
    steady state costs no database read. The database is read at start, after any failure
    (everything unpublished, in id order), and every ``poll_s`` for rows left unpublished longer
    than ``stale_s`` (another listener's leftovers). Rows are marked published only after the
    broker acknowledged them, and ``mark_after_s`` later: by then the normaliser has usually
    recorded its outcome, which sets ``published_at`` from the record's timestamp, and the
    relay's mark finds nothing left to write. On PostgreSQL each write of a message row is a
    new row version with an entry in every index, and this saves one of the three (insert,
    published, outcome). The relay's stale poll leaves out the rows it holds unmarked, and a
    recovery writes the marks first, so it never reads back what it has published; a crash
    before they are written republishes those rows (at least once, as before, over a longer
    window).

    Arguments:
        store: the message store (the outbox).
        connect: builds a started publisher; called again after a failure.
        batch: most messages per publish round.
        poll_s: how often to look in the database for stale unpublished rows.
        republish_after_s: republish accepted messages still unprocessed this long after
            publishing (0 = never). For brokers without durable storage, whose restart loses
            published records.
        linger_s: after a wake-up, wait this long for more messages before a round: a round
            costs about 1 ms of CPU whatever its size (measured), so rounds of a few messages
            would spend the listener's CPU on the relay.
        mark_after_s: how long after publishing a round the relay marks its rows (0: at once);
            keep it well below ``stale_s``, after which another listener would publish them
            again.
    """

    def __init__(self, store: MessageStore, connect: Callable[[], Awaitable[Publisher]],
                 batch: int = 1000, poll_s: float = 1.0, republish_after_s: float = 0.0,
                 stale_s: float = 5.0, linger_s: float = 0.03, mark_after_s: float = 0.5) -> None:
        self._linger = linger_s
        self._mark_after = mark_after_s
        # Rounds published, not yet marked (oldest first): when (monotonic), the broker's ACK
        # time and the ids.
        self._unmarked: list[tuple[float, datetime, list[int]]] = []
        self._running: asyncio.Task[None] | None = None
        self._marking = asyncio.Lock()
        self._store = store
        self._connect = connect
        self._batch = batch
        self._poll = poll_s
        self._stale = stale_s
        self._republish_after = republish_after_s
        self._last_sweep = -math.inf  # time.monotonic() is small just after boot
        self._last_poll = -math.inf
        self._queue: list[PendingMessage] = []
        self._recovering = True  # start by publishing whatever the store holds
        self._recovered_up_to = 0
        self._wake = asyncio.Event()
        self._publisher: Publisher | None = None
        self._stopping = False

    def handoff(self, rows: list[PendingMessage]) -> None:
        """Take freshly committed accepted messages (called by the writer after each commit)."""
        if rows:
            self._queue.extend(rows)
            self._wake.set()

    async def run(self) -> None:
        self._running = asyncio.current_task()
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
                self._recovering = True
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
        else:
            if len(self._queue) < self._batch and not self._stopping:
                await asyncio.sleep(self._linger)
        self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish one round; returns how many messages it published."""
        await self._mark(due_only=True)
        await self._sweep()
        if self._recovering:
            return await self._recover_round()
        if time.monotonic() - self._last_poll >= self._poll:
            self._last_poll = time.monotonic()
            cutoff = datetime.now(UTC) - timedelta(seconds=self._stale)
            held = {i for _, _, ids in self._unmarked for i in ids}  # ours, not yet marked
            stale = await self._store.unpublished(self._batch + len(held), received_before=cutoff)
            stale = [r for r in stale if r.id not in held][: self._batch]
            if stale:
                log.warning("relay.stale_unpublished", messages=len(stale))
                published = {r.id for r in stale}
                self._queue = [r for r in self._queue if r.id not in published]
                return await self._publish(stale)
        rows, self._queue = self._queue[: self._batch], self._queue[self._batch :]
        rows = [r for r in rows if r.id > self._recovered_up_to]
        return await self._publish(rows) if rows else 0

    async def _recover_round(self) -> int:
        self._queue.clear()  # everything queued is committed, so the database read covers it
        await self._mark()  # what the read would find again
        rows = await self._store.unpublished(self._batch)
        published = await self._publish(rows) if rows else 0
        if rows:
            self._recovered_up_to = max(self._recovered_up_to, rows[-1].id)
        if len(rows) < self._batch:
            self._recovering = False
            if self._recovered_up_to:
                log.info("relay.recovered", up_to=self._recovered_up_to)
        return published

    async def _publish(self, rows: list[PendingMessage]) -> int:
        if self._publisher is None:
            self._publisher = await self._connect()
        records = [(partition_key(r.patient_key, f"msg-{r.id}"), envelope(r)) for r in rows]
        try:
            await self._publisher.publish(ADT_RAW.name, records)
        except RecordTooLarge:
            return await self._publish_one_by_one(rows, records)
        self._unmarked.append((time.monotonic(), datetime.now(UTC), [r.id for r in rows]))
        if self._mark_after <= 0:
            await self._mark()
        metrics.PUBLISHED.inc(len(rows))
        return len(rows)

    async def _mark(self, due_only: bool = False) -> None:
        """Mark what was published (all of it, or only once ``mark_after_s`` has passed since
        the oldest round), each round with the time the broker acknowledged it; what is not
        written is kept for the next try. The store marks only rows nothing marked and not
        processed since that time (a replay may have queued them again meanwhile)."""
        async with self._marking:  # stop() may mark while run() is marking
            while self._unmarked and not (
                    due_only and time.monotonic() - self._unmarked[0][0] < self._mark_after):
                _, sent_at, ids = self._unmarked[0]
                await self._store.mark_published(ids, sent_at)
                self._unmarked.pop(0)
                due_only = False  # the rest of a due flush goes too

    async def _publish_one_by_one(self, rows: list[PendingMessage],
                                  records: list[tuple[bytes, bytes]]) -> int:
        """A record the broker refuses as too large must not stop everyone else's messages:
        publish one by one and dead-letter the refused ones with the reason."""
        assert self._publisher is not None
        refused: list[Outcome] = []
        for row, record in zip(rows, records, strict=True):
            try:
                await self._publisher.publish(ADT_RAW.name, [record])
            except RecordTooLarge:
                reason = (f"message: {len(record[1])} bytes once enveloped, more than the Kafka "
                          "topic accepts; raise the broker's message.max.bytes or lower "
                          "TRANSCARE_MAX_MESSAGE_BYTES")
                refused.append(Outcome(row.id, DEADLETTERED, reason, row.received_at))
                metrics.DEADLETTERS.labels("kafka-size").inc()
                log.error("relay.message_too_large", message_id=row.id, bytes=len(record[1]))
        now = datetime.now(UTC)
        await self._store.record_outcomes(refused, now)
        await self._store.mark_published([r.id for r in rows], now)
        metrics.PUBLISHED.inc(len(rows) - len(refused))
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

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let the round in progress finish (up to ``timeout_s``), write the marks still due,
        close the publisher. What is left unmarked is published again at the next start."""
        self._stopping = True
        self._wake.set()
        if self._running is not None and self._running is not asyncio.current_task():
            await asyncio.wait({self._running}, timeout=timeout_s)
        try:
            await self._mark()
        except Exception as exc:  # the database is gone: those rows are published again
            log.warning("relay.mark_failed", error=type(exc).__name__,
                        messages=sum(len(ids) for _, _, ids in self._unmarked))
        await self._drop_publisher()


