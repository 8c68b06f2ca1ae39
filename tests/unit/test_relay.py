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
from adt_listener.store import ACCEPTED, DEADLETTERED, IncomingMessage
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


def relay_for(store: FakeMessageStore, publisher: FakePublisher) -> Relay:
    async def connect() -> FakePublisher:
        return publisher

    return Relay(store, connect, poll_s=0.05, linger_s=0.0)


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
