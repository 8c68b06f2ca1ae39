"""The outbox publisher's database side on SQLite and PostgreSQL: id order, one lease holder at
a time, marking, pruning. (Publishing to the real broker is covered by the integration tests,
which read the published events back from the topics.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from transcare.db.database import Database
from transcare.db.tables import leases, outbox
from transcare.outbox import OutboxPublisher, backlog

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Recorder:
    """The publisher port, recording what it was given (topic, key, value) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.calls: list[str] = []

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.calls.append(topic)
        self.sent += [(topic, k, v) for k, v in records]


async def fill(db: Database, n: int) -> None:
    rows = [{"topic": "a" if i % 3 else "b", "key": f"M{i % 2}", "payload": f'{{"n": {i}}}',
             "created_at": T0} for i in range(n)]
    await db.run(lambda c: c.execute(insert(outbox), rows))


def numbers(sent: list[tuple[str, bytes, bytes]], topic: str) -> list[int]:
    return [int(v.decode()[6:-1]) for t, _, v in sent if t == topic]


async def test_rows_go_out_once_each_topic_in_id_order(database: Database) -> None:
    await fill(database, 7)
    sink = Recorder()
    publisher = OutboxPublisher(database, sink, "w1", clock=lambda: T0, batch=5)
    assert await publisher.publish_once() == 5
    assert await publisher.publish_once() == 2
    assert await publisher.publish_once() == 0
    assert numbers(sink.sent, "a") == [1, 2, 4, 5]
    assert numbers(sink.sent, "b") == [0, 3, 6]
    assert await database.run(backlog) == 0


async def test_a_round_publishes_each_topic_once_however_interleaved(database: Database) -> None:
    # A planning batch interleaves task, notification and episode rows; publishing each run
    # of one topic separately cost a broker round trip per run and left the outbox seconds
    # behind under load.
    await fill(database, 30)
    sink = Recorder()
    publisher = OutboxPublisher(database, sink, "w1", clock=lambda: T0)
    assert await publisher.publish_once() == 30
    assert sorted(sink.calls) == ["a", "b"]
    assert numbers(sink.sent, "b") == list(range(0, 30, 3))


async def test_the_lease_is_renewed_after_a_third_of_its_time_not_every_round(
        database: Database) -> None:
    clock = [T0]
    publisher = OutboxPublisher(database, Recorder(), "w1", clock=lambda: clock[0])

    async def expires() -> datetime:
        value = await database.run(lambda c: c.execute(
            select(leases.c.expires_at).where(leases.c.name == "outbox-publisher")).scalar_one())
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    await publisher.publish_once()
    assert await expires() == T0 + timedelta(seconds=10)
    clock[0] = T0 + timedelta(seconds=3)
    await publisher.publish_once()
    assert await expires() == T0 + timedelta(seconds=10)  # no write this round
    clock[0] = T0 + timedelta(seconds=4)
    await publisher.publish_once()
    assert await expires() == T0 + timedelta(seconds=14)


async def test_only_the_lease_holder_publishes(database: Database) -> None:
    await fill(database, 3)
    first, second = Recorder(), Recorder()
    clock = [T0]
    a = OutboxPublisher(database, first, "w1", clock=lambda: clock[0])
    b = OutboxPublisher(database, second, "w2", clock=lambda: clock[0])
    assert await a.publish_once() == 3
    await fill(database, 2)
    assert await b.publish_once() == 0  # w1 holds the lease
    clock[0] = T0 + timedelta(seconds=11)  # w1 died: its lease expired
    assert await b.publish_once() == 2
    assert len(first.sent) == 3 and len(second.sent) == 2


async def test_published_rows_are_pruned_after_the_retention(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # Just after boot time.monotonic() is small: the first prune must still run (it was
    # skipped for the first 10 minutes of a machine's uptime).
    monkeypatch.setattr("transcare.outbox.time.monotonic", lambda: 5.0)
    await fill(database, 4)
    clock = [T0]
    publisher = OutboxPublisher(database, Recorder(), "w1", clock=lambda: clock[0],
                                retention=timedelta(days=7))
    await publisher.publish_once()
    await fill(database, 1)  # not yet published: never pruned
    clock[0] = T0 + timedelta(days=8)
    assert await publisher.prune_once() == 4
    left = await database.run(lambda c: c.execute(select(func.count()).select_from(outbox)).scalar_one())
    assert left == 1
