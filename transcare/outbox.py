"""The outbox publisher: events committed with the state they describe, published to Kafka.

Processors write events into the ``outbox`` table in their own transaction. One publisher at
a time (a database lease, so several workers never interleave one member's events) sends the
unpublished rows and marks them published: each topic's rows in id order (so one key's events
keep their order), the topics of a round side by side; rows published more than a week ago
are deleted (the topics hold them). A crash between the send and the mark
sends those rows again: delivery is at least once, and every event carries a deterministic
``event_id`` for consumers to drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from transcare import metrics
from transcare.db.database import Database
from transcare.db.leases import acquire, release
from transcare.db.lists import one_of
from transcare.db.tables import outbox

log = structlog.get_logger("transcare.outbox")
LEASE = "outbox-publisher"


class Publisher(Protocol):
    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...


Row = tuple[int, str, str, str]  # id, topic, key, payload


def unpublished(conn: Connection, limit: int) -> list[Row]:
    c = outbox.c
    query = select(c.id, c.topic, c.key, c.payload).where(c.published_at.is_(None)).order_by(
        c.id).limit(limit)
    return [(int(i), t, k, p) for i, t, k, p in conn.execute(query)]


def mark_published(conn: Connection, ids: Sequence[int], now: datetime) -> None:
    conn.execute(update(outbox).where(one_of(conn, outbox.c.id, ids)).values(published_at=now))


def prune(conn: Connection, before: datetime) -> int:
    """Delete rows published before ``before`` (the topics hold them from then on)."""
    c = outbox.c
    return int(conn.execute(outbox.delete().where(c.published_at.is_not(None),
                                                  c.published_at < before)).rowcount or 0)


def backlog(conn: Connection) -> int:
    c = outbox.c
    return int(conn.execute(select(func.count()).where(c.published_at.is_(None))).scalar_one())


class OutboxPublisher:
    """Publishes the outbox while it holds the lease.

    Arguments:
        db: the database the processors write to.
        publisher: a started Kafka publisher.
        holder: this process's name for the lease (unique per process).
        clock: the current time (injected for tests).
    """

    def __init__(self, db: Database, publisher: Publisher, holder: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), batch: int = 1000,
                 poll_s: float = 0.1, lease_ttl: timedelta = timedelta(seconds=10),
                 retention: timedelta = timedelta(days=7)) -> None:
        self._db, self._publisher, self._holder, self._clock = db, publisher, holder, clock
        self._batch, self._poll, self._ttl, self._retention = batch, poll_s, lease_ttl, retention
        self._wake = asyncio.Event()
        self._pruned_at: float | None = None  # time.monotonic() of the last prune
        self._renewed_at: datetime | None = None  # when this process last took the lease

    def wake(self) -> None:
        """New rows were committed here: publish without waiting for the next poll."""
        self._wake.set()

    async def publish_once(self) -> int:
        """Publish one batch if this process holds the lease; the number of rows sent."""
        if not await self._hold_lease():
            return 0
        rows = await self._db.run(lambda c: unpublished(c, self._batch))
        if not rows:
            return 0
        groups = _by_topic(rows)
        await asyncio.gather(*(self._publisher.publish(t, records) for t, records in groups.items()))
        for topic, records in groups.items():
            metrics.OUTBOX_PUBLISHED.labels(topic).inc(len(records))
        ids = [r[0] for r in rows]
        await self._db.write(lambda c: mark_published(c, ids, self._clock()))
        return len(rows)

    async def _hold_lease(self) -> bool:
        """Take the lease, or renew it once a third of its time has passed (not on every
        round: each renewal is a write transaction). A holder publishes only while at least
        two thirds of its lease are left, so a lease another process takes over has expired."""
        now = self._clock()
        if self._renewed_at is not None and timedelta(0) <= now - self._renewed_at < self._ttl / 3:
            return True
        self._renewed_at = None
        if not await self._db.write(lambda c: acquire(c, LEASE, self._holder, now, self._ttl)):
            return False
        self._renewed_at = now
        return True

    async def prune_once(self) -> int:
        """Drop rows published longer ago than the retention (at most every 10 minutes)."""
        if self._pruned_at is not None and time.monotonic() - self._pruned_at < 600:
            return 0
        self._pruned_at = time.monotonic()
        before = self._clock() - self._retention
        return await self._db.write(lambda c: prune(c, before))

    async def run(self) -> None:
        """Publish until cancelled; failures are logged and retried with backoff."""
        delay = self._poll
        try:
            while True:
                try:
                    sent = await self.publish_once()
                    await self.prune_once()
                    delay = self._poll
                except Exception as exc:  # broker or database down: retry, never drop
                    metrics.OUTBOX_ERRORS.inc()
                    log.warning("outbox.publish_failed", error=type(exc).__name__)
                    sent, delay = 0, min(delay * 2, 5.0)
                if sent < self._batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    self._wake.clear()
        finally:
            with contextlib.suppress(Exception):
                await self._db.write(lambda c: release(c, LEASE, self._holder))


def _by_topic(rows: Sequence[Row]) -> dict[str, list[tuple[bytes, bytes]]]:
    """Rows grouped by topic, id order within each topic.

    One publish per topic and round: grouping only consecutive rows made one broker round
    trip per run of a topic, and a planning batch interleaves task, notification and episode
    rows, so the outbox fell seconds behind under load."""
    groups: dict[str, list[tuple[bytes, bytes]]] = {}
    for _, topic, key, payload in rows:
        groups.setdefault(topic, []).append((key.encode(), payload.encode()))
    return groups
