"""The outbox publisher's database side on SQLite and PostgreSQL: id order, one lease holder at
a time, marking, pruning. (Publishing to the real broker is covered by the integration tests,
which read the published events back from the topics.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from transcare.db.database import Database
from transcare.db.tables import outbox
from transcare.outbox import OutboxPublisher, backlog

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Recorder:
    """The publisher port, recording what it was given (topic, key, value) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.sent += [(topic, k, v) for k, v in records]


async def fill(db: Database, n: int) -> None:
    rows = [{"topic": "a" if i % 3 else "b", "key": f"M{i % 2}", "payload": f'{{"n": {i}}}',
             "created_at": T0} for i in range(n)]
    await db.run(lambda c: c.execute(insert(outbox), rows))


async def test_rows_go_out_in_id_order_once(database: Database) -> None:
    await fill(database, 7)
    sink = Recorder()
    publisher = OutboxPublisher(database, sink, "w1", clock=lambda: T0, batch=5)
    assert await publisher.publish_once() == 5
    assert await publisher.publish_once() == 2
    assert await publisher.publish_once() == 0
    assert [int(v.decode()[6:-1]) for _, _, v in sink.sent] == list(range(7))
    assert await database.run(backlog) == 0


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


async def test_published_rows_are_pruned_after_the_retention(database: Database) -> None:
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
