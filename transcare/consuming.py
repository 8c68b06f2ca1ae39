"""The stages' Kafka input: a plain aiokafka consumer per stage, batches in, offsets committed
after each batch is handled.

faust's agents delivered each record through its consumer thread, a queue and the stream's
per-event machinery before ``take_events`` gathered them again: measured with ``py-spy``
under ``bench/e2e`` load, about a third of the normaliser's CPU and a quarter of the
transitions and follow-up worker's. ``getmany`` hands over what the fetcher already holds,
up to 500 records, in one call on the worker's own event loop. The faust app still runs the
stages' timers and background tasks.

Delivery is at least once, and every stage is idempotent (the normaliser's decided check,
``processed_events``, ``planned_events``), so a batch delivered again changes nothing:

- offsets are committed only after ``handle`` returned for every record up to them, at
  most every :data:`COMMIT_EVERY_S` seconds, when partitions are revoked, and on stop;
- ``handle`` is never skipped: if it raises, the same records are handled again after a
  pause (the stages retry their own database and broker failures and give up on a poison
  event alone, so this is a last resort);
- a rebalance waits for the batch in hand (the revoke callback takes the same lock), then
  commits; a commit that fails because the group moved on is logged, and the records since
  the last commit are delivered again to their new owner;
- a batch still gathering when a revocation comes is dropped, and where this consumer keeps
  (or gets back) a partition of it, its position goes back to the first dropped record, so
  the next batch's commit cannot pass over them.

Each stage has a consumer group of its own, ``<TRANSCARE_CONSUMER_GROUP>-<stage>``: workers
running the same stage share its partitions whichever other stages they run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

log = structlog.get_logger("transcare.consuming")

MAX_RECORDS = 500  # a batch: the stages' transactions take up to 500 events
# A broker holds a fetch up to this long when it has nothing new; the embedded broker does so
# even when records arrive meanwhile (measured: 1,500 ms added up to 1.5 s per stage).
FETCH_MAX_WAIT_MS = 100
COMMIT_EVERY_S = 1.0
LINGER_S = 0.02  # after the first records of a batch, wait this long for more
RETRY_AFTER_S = 1.0

Records = Sequence[ConsumerRecord[bytes, bytes]]


class BatchConsumer:
    """Consume ``topic`` in consumer group ``group``, handing batches to ``handle``.

    Arguments:
        bootstrap: ``host:port[,host:port]``.
        group: the consumer group.
        topic: the input topic.
        handle: handles a batch (records of a partition in offset order); returns once their
            effects are durable.
        session_timeout_s, heartbeat_s, rebalance_timeout_s: the group's timeouts.
    """

    def __init__(self, bootstrap: str, group: str, topic: str,
                 handle: Callable[[Records], Awaitable[None]], *, session_timeout_s: float,
                 heartbeat_s: float, rebalance_timeout_s: float,
                 max_records: int = MAX_RECORDS, linger_s: float = LINGER_S) -> None:
        self._bootstrap, self._group, self._topic = bootstrap, group, topic
        self._handle, self._max, self._linger = handle, max_records, linger_s
        self._timeouts = (session_timeout_s, heartbeat_s, rebalance_timeout_s)
        self._lock = asyncio.Lock()
        self._done: dict[TopicPartition, int] = {}  # next offset to commit, by partition
        self._committed_at = time.monotonic()
        self._consumer: AIOKafkaConsumer | None = None
        self._revocations = 0

    def _new_consumer(self) -> AIOKafkaConsumer:
        session, heartbeat, rebalance = self._timeouts
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=self._group, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            max_poll_records=self._max, session_timeout_ms=int(session * 1000),
            heartbeat_interval_ms=int(heartbeat * 1000),
            rebalance_timeout_ms=int(rebalance * 1000))

    async def run(self) -> None:
        """Consume until cancelled; the last handled offsets are committed on the way out."""
        consumer = self._consumer = self._new_consumer()
        consumer.subscribe([self._topic], listener=_CommitOnRevoke(self))
        await self._start(consumer)
        try:
            while True:
                generation = self._revocations
                batches = await self._gather(consumer)
                async with self._lock:
                    if self._revocations != generation:
                        # Revoked while these were gathered: their partitions start again
                        # from the committed offsets, here or at their new owner.
                        _rewind(consumer, batches)
                        batches = {}
                    records = [r for rs in batches.values() for r in rs]
                    if records:
                        await self._handle_until_done(records)
                        for tp, rs in batches.items():
                            if rs:
                                self._done[tp] = rs[-1].offset + 1
                    if time.monotonic() - self._committed_at >= COMMIT_EVERY_S:
                        await self._commit(consumer)
        finally:
            async with self._lock:
                await self._commit(consumer)
            await consumer.stop()

    async def _gather(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """Up to ``max_records`` records: what is there, then what arrives within
        ``linger_s`` of the first (each batch has a cost of its own: a transaction, a produce
        request, a commit check)."""
        batches = dict(await consumer.getmany(timeout_ms=1000, max_records=self._max))
        count = sum(len(rs) for rs in batches.values())
        if not count or not self._linger:
            return batches
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        while count < self._max and (left := deadline - loop.time()) > 0:
            more = await consumer.getmany(timeout_ms=max(1, int(left * 1000)),
                                          max_records=self._max - count)
            for tp, rs in more.items():
                batches[tp] = [*batches.get(tp, []), *rs]
                count += len(rs)
        return batches

    async def _start(self, consumer: AIOKafkaConsumer) -> None:
        """Start the consumer, waiting while the broker cannot be reached."""
        while True:
            try:
                await consumer.start()
                return
            except KafkaError as exc:
                log.warning("consumer.broker_unreachable", group=self._group,
                            error=type(exc).__name__)
                await asyncio.sleep(RETRY_AFTER_S)

    async def _handle_until_done(self, records: Records) -> None:
        while True:
            try:
                await self._handle(records)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never skip records: try the same ones again
                log.error("consumer.batch_failed", group=self._group, size=len(records),
                          error=type(exc).__name__)
                await asyncio.sleep(RETRY_AFTER_S)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the handled offsets; a failed commit only means they are delivered again."""
        self._committed_at = time.monotonic()
        if not self._done:
            return
        offsets = {tp: OffsetAndMetadata(offset, "") for tp, offset in self._done.items()}
        self._done = {}
        try:
            await consumer.commit(offsets)
        except (KafkaError, AssertionError, ValueError) as exc:
            log.info("consumer.commit_failed", group=self._group, error=type(exc).__name__,
                     partitions=len(offsets))

    async def revoked(self) -> None:
        """Partitions are about to be taken away: finish the batch in hand, then commit it."""
        if self._consumer is None:
            return
        async with self._lock:
            self._revocations += 1
            await self._commit(self._consumer)


def _rewind(consumer: AIOKafkaConsumer, dropped: dict[TopicPartition, list[Any]]) -> None:
    """Fetch dropped records again where this consumer still has their partition: kept or
    given back in the rebalance, its position is past them, and the next batch's commit
    would skip them (found in review; tests/integration/test_batch_consumer.py). The first
    dropped offset is normally the committed one (the revocation committed what was handled);
    over two rebalances in one gather it can be lower: records delivered again, never lost."""
    assigned = consumer.assignment()
    for tp, records in dropped.items():
        if records and tp in assigned:
            consumer.seek(tp, min(r.offset for r in records))


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BatchConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner.revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


__all__ = ["BatchConsumer", "MAX_RECORDS", "Records"]
