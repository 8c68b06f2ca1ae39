"""The relay: committed messages to adt.raw.v1 in order, nothing lost, nothing blocked.

The publisher here is a fake of the relay's Publisher port; the relay against the real broker
is exercised by the integration tests (SIGKILL, broker restart).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from adt_listener.relay import RecordTooLarge, Relay
from adt_listener.store import ACCEPTED, DEADLETTERED, PROCESSED, IncomingMessage, Outcome
from tests.fakes import FakeMessageStore

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class FakePublisher:
    """Records what was published; can fail the next call or refuse records over a size."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.sent: list[tuple[bytes, dict[str, object]]] = []
        self.fail_next = 0
        self.max_bytes = max_bytes

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        assert topic == "adt.raw.v1"
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker down")
        if any(len(value) > self.max_bytes for _, value in records):
            raise RecordTooLarge("too large")
        self.sent.extend((key, json.loads(value)) for key, value in records)


def incoming(control_id: str, patient: str = "P1@HOSP", size: int = 10) -> IncomingMessage:
    return IncomingMessage(T0, "HOSP", control_id, "ADT^A01", patient, "127.0.0.1", "ascii",
                           b"MSH|^~\\&|A|HOSP|||||ADT^A01|" + control_id.encode() + b"|P|2.5\r"
                           + b"Z" * size, "AA", "ack", ACCEPTED)


async def stored(store: FakeMessageStore, *items: IncomingMessage) -> list[int]:
    return [r.id for r in await store.store(list(items))]  # type: ignore[misc]


def relay_for(store: FakeMessageStore, publisher: FakePublisher,
              mark_after_s: float = 0.0) -> Relay:
    async def connect() -> FakePublisher:
        return publisher

    return Relay(store, connect, poll_s=0.05, linger_s=0.0, mark_after_s=mark_after_s)


async def test_start_publishes_what_the_store_holds_in_order() -> None:
    store, publisher = FakeMessageStore(), FakePublisher()
    ids = await stored(store, incoming("A"), incoming("B", "P2@HOSP"), incoming("C"))
    relay = relay_for(store, publisher)
    assert await relay.publish_pending() == 3
    assert [v["message_id"] for _, v in publisher.sent] == ids
    assert [k for k, _ in publisher.sent] == [b"P1@HOSP", b"P2@HOSP", b"P1@HOSP"]
    assert await store.unpublished(10) == []


async def test_handed_off_rows_are_published_without_reading_the_store_twice() -> None:
    store, publisher = FakeMessageStore(), FakePublisher()
    relay = relay_for(store, publisher)
    await relay.publish_pending()  # start-up recovery: nothing stored yet
    items = [incoming("H1"), incoming("H2")]
    ids = await stored(store, *items)
    relay.handoff([item.pending(i) for item, i in zip(items, ids, strict=True)])
    assert await relay.publish_pending() == 2
    assert [v["control_id"] for _, v in publisher.sent] == ["H1", "H2"]
    assert await store.backlog() == 0


async def test_a_failed_round_loses_nothing_and_keeps_order() -> None:
    store, publisher = FakeMessageStore(), FakePublisher()
    relay = relay_for(store, publisher)
    await relay.publish_pending()
    items = [incoming("F1"), incoming("F2")]
    ids = await stored(store, *items)
    relay.handoff([item.pending(i) for item, i in zip(items, ids, strict=True)])
    publisher.fail_next = 1
    task = asyncio.create_task(relay.run())
    for _ in range(200):
        if len(publisher.sent) >= 2:
            break
        await asyncio.sleep(0.02)
    await relay.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [v["control_id"] for _, v in publisher.sent] == ["F1", "F2"]
    assert await store.backlog() == 0


async def test_a_record_too_large_is_dead_lettered_and_the_others_go_through() -> None:
    store, publisher = FakeMessageStore(), FakePublisher(max_bytes=2000)
    ids = await stored(store, incoming("S1"), incoming("BIG", size=5000), incoming("S2"))
    relay = relay_for(store, publisher)
    assert await relay.publish_pending() == 3
    assert [v["control_id"] for _, v in publisher.sent] == ["S1", "S2"]
    (big,) = await store.find(control_id="BIG")
    assert big.id == ids[1] and big.status == DEADLETTERED
    assert "more than the Kafka topic accepts" in (big.reason or "")
    assert await store.backlog() == 0


async def test_marks_wait_so_that_the_normalisers_outcome_can_set_them_first() -> None:
    """The relay marks a round's rows ``mark_after_s`` later, only where nothing set
    ``published_at`` before (the normaliser's outcome, from the record's timestamp)."""
    store, publisher = FakeMessageStore(), FakePublisher()
    relay = relay_for(store, publisher, mark_after_s=0.2)
    await relay.publish_pending()  # start-up recovery: nothing stored yet
    items = [incoming("M1"), incoming("M2")]
    ids = await stored(store, *items)
    relay.handoff([item.pending(i) for item, i in zip(items, ids, strict=True)])
    assert await relay.publish_pending() == 2
    stamped = T0.replace(second=5)
    await store.record_outcomes([Outcome(ids[0], PROCESSED, None, T0, stamped)], T0)
    assert await relay.publish_pending() == 0  # not due yet: nothing marked
    assert [m.published_at for m in await store.find(limit=10)] == [None, stamped]
    await asyncio.sleep(0.25)
    assert await relay.publish_pending() == 0
    published = [m.published_at for m in await store.find(limit=10)]
    assert published[1] == stamped and published[0] is not None and published[0] != stamped
    assert await store.backlog() == 0


async def test_due_marks_are_written_before_the_backlog_is_read_again() -> None:
    """A stale poll or a recovery reads the rows not marked published: the poll leaves out
    the rows the relay holds unmarked and a recovery writes its marks first, so it never
    publishes its rows twice; stopping writes them too."""
    store, publisher = FakeMessageStore(), FakePublisher()
    relay = relay_for(store, publisher, mark_after_s=60.0)
    ids = await stored(store, incoming("S1"), incoming("S2"))
    assert await relay.publish_pending() == 2  # recovery reads and publishes both
    assert await store.backlog() == 2  # published, not marked yet
    ids += await stored(store, incoming("S3"))  # received at T0: stale at once
    await asyncio.sleep(0.06)  # the stale poll is due (poll_s=0.05)
    assert await relay.publish_pending() == 1  # S3 only: S1 and S2 are held unmarked
    assert await store.backlog() == 3
    publisher.fail_next = 1  # the next round fails: the relay recovers from the store
    ids += await stored(store, incoming("S4"))
    task = asyncio.create_task(relay.run())
    for _ in range(100):
        if len(publisher.sent) == 4:
            break
        await asyncio.sleep(0.02)
    await relay.stop()
    await task
    assert [v["message_id"] for _, v in publisher.sent] == ids  # each once, in order
    assert await store.backlog() == 0


async def test_a_replay_meanwhile_is_not_undone_by_a_late_mark() -> None:
    """``transcare replay`` queues a processed message again (``published_at`` cleared) while
    the relay still holds its first publication unmarked: the late mark must not record that
    first publication as this one, or the replay would never be sent."""
    store, publisher = FakeMessageStore(), FakePublisher()
    relay = relay_for(store, publisher, mark_after_s=0.1)
    await relay.publish_pending()  # start-up recovery: nothing stored yet
    item = incoming("R1")
    [rid] = await stored(store, item)
    relay.handoff([item.pending(rid)])
    assert await relay.publish_pending() == 1  # published; its mark waits
    await asyncio.sleep(0.01)
    now = datetime.now(UTC)
    await store.record_outcomes([Outcome(rid, PROCESSED, None, T0, now)], now)
    assert await store.republish(None, None) == 1  # the replay: accepted, unpublished again
    await asyncio.sleep(0.12)
    for _ in range(3):  # the due mark, then stale polls (received at T0: stale at once)
        await relay.publish_pending()
        await asyncio.sleep(0.06)
    assert [v["control_id"] for _, v in publisher.sent] == ["R1", "R1"]


async def test_rows_held_unmarked_do_not_use_up_the_stale_polls_limit() -> None:
    """The stale poll reads at most a batch of rows besides those the relay holds unmarked:
    another listener's leftover behind a full batch of them is still found."""
    store, publisher = FakeMessageStore(), FakePublisher()

    async def connect() -> FakePublisher:
        return publisher

    relay = Relay(store, connect, batch=2, poll_s=60.0, linger_s=0.0, mark_after_s=60.0)
    await relay.publish_pending()  # start-up recovery: nothing stored yet
    items = [incoming("H1"), incoming("H2")]
    held = await stored(store, *items)
    relay.handoff([item.pending(i) for item, i in zip(items, held, strict=True)])
    assert await relay.publish_pending() == 2  # a full batch, held unmarked
    [leftover] = await stored(store, incoming("L1"))  # another listener's, received at T0
    relay._poll = 0.05  # the stale poll is due from now on
    await asyncio.sleep(0.06)
    assert await relay.publish_pending() == 1
    assert [v["message_id"] for _, v in publisher.sent] == [*held, leftover]
