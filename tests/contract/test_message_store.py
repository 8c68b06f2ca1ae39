"""Contract of the ``MessageStore`` port, run against every backend (STYLE.md point 7).

Backends: the in-memory ``FakeMessageStore`` the unit tests use, SQLite (a migrated temp file)
and PostgreSQL (a database created for the session on ``TRANSCARE_TEST_POSTGRES_URL``, migrated,
emptied before each test and dropped at the end). Without that variable the PostgreSQL cases are
reported as skipped, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import adt_listener.store as store_module
from adt_listener.store import (
    ACCEPTED,
    DEADLETTERED,
    PROCESSED,
    REJECTED,
    IncomingMessage,
    MessageStore,
    Outcome,
    SqlAlchemyMessageStore,
)
from tests.contract.conftest import POSTGRES_ENV, _migrate
from tests.fakes import FakeMessageStore
from transcare.db.database import open_database

T0 = datetime(2024, 3, 1, 8, 30, 15, tzinfo=UTC)


def msg(control_id: str | None = "C1", facility: str = "WARD", *, status: str = ACCEPTED,
        ack: str | None = None, at: datetime = T0, **kw: Any) -> IncomingMessage:
    """An incoming ADT; its ACK text names facility and MSH-10 so tests can tell ACKs apart."""
    code = "AA" if status == ACCEPTED else "AE"
    fields: dict[str, Any] = dict(
        received_at=at, sending_facility=facility, control_id=control_id,
        message_type="ADT^A01", patient_key="123@HOSP", peer="10.0.0.1", charset="ascii",
        raw=f"MSH|^~\\&|HIS|{facility}|TC|TC|||ADT^A01|{control_id}|P|2.5\r".encode(),
        ack_code=code, ack=ack or f"MSA|{code}|{control_id}|{facility}|{uuid.uuid4().hex}",
        status=status, reason=None if status == ACCEPTED else "PID-3: missing",
    )
    fields.update(kw)
    return IncomingMessage(**fields)


def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (UTC as written); PostgreSQL returns aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# -- backends ---------------------------------------------------------------------------------


@pytest.fixture(params=["fake", "sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path,
                postgres_url: str | None) -> AsyncIterator[MessageStore]:
    if request.param == "fake":
        yield FakeMessageStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        await _migrate(url)
    else:
        if postgres_url is None:
            pytest.skip(f"PostgreSQL contract tests did not run: set {POSTGRES_ENV}")
        # With a connection option, as deployments have (?ssl=...): the engine and the
        # listener's own asyncpg connection must read the URL alike.
        url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}ssl=disable"
    db = open_database(url)
    if request.param == "postgresql":
        await db.run(lambda conn: conn.execute(text("TRUNCATE messages RESTART IDENTITY")))
    store = SqlAlchemyMessageStore(db)  # on PostgreSQL: the listener's asyncpg hot path
    yield store
    await store.close()
    await db.dispose()


async def accepted_rows(store: MessageStore, control_id: str, facility: str) -> int:
    rows = await store.find(control_id=control_id, facility=facility, status=ACCEPTED)
    return len(rows)


# -- store and find ---------------------------------------------------------------------------


async def test_store_then_find_by_control_id_facility_and_status(store: MessageStore) -> None:
    results = await store.store([
        msg("C1", "WARD"), msg("C2", "WARD"), msg("C1", "CLINIC"),
        msg("C3", "WARD", status=REJECTED),
    ])
    assert [r.duplicate for r in results] == [False] * 4

    by_id = await store.find(control_id="C1")
    assert sorted(m.sending_facility for m in by_id) == ["CLINIC", "WARD"]
    ward = await store.find(facility="WARD")
    assert [m.control_id for m in ward] == ["C3", "C2", "C1"]  # newest first
    (rejected,) = await store.find(status=REJECTED)
    assert (rejected.control_id, rejected.ack_code, rejected.reason) == ("C3", "AE",
                                                                        "PID-3: missing")
    (one,) = await store.find(control_id="C2", facility="WARD", status=ACCEPTED)
    assert (one.message_type, one.status, one.reason) == ("ADT^A01", ACCEPTED, None)
    assert (one.published_at, one.processed_at) == (None, None)


async def test_find_pages_with_limit_and_before_id(store: MessageStore) -> None:
    await store.store([msg(f"C{i}") for i in range(5)])
    first = await store.find(limit=2)
    assert [m.control_id for m in first] == ["C4", "C3"]
    rest = await store.find(limit=10, before_id=first[-1].id)
    assert [m.control_id for m in rest] == ["C2", "C1", "C0"]


async def test_message_without_control_id_is_stored_each_time(store: MessageStore) -> None:
    results = await store.store([msg(None), msg(None)])
    assert [r.duplicate for r in results] == [False, False]
    assert len(await store.find(facility="WARD")) == 2


# -- duplicates (MSH-4, MSH-10) ---------------------------------------------------------------


async def test_resend_returns_original_ack_and_is_not_inserted(store: MessageStore) -> None:
    original = msg("C1", ack="ORIGINAL-ACK")
    (first,) = await store.store([original])
    (again,) = await store.store([msg("C1", ack="NEW-ACK", at=T0 + timedelta(minutes=5))])
    assert (first.ack, first.duplicate) == ("ORIGINAL-ACK", False)
    assert (again.ack, again.duplicate) == ("ORIGINAL-ACK", True)
    (row,) = await store.find(control_id="C1")
    assert utc(row.received_at) == T0


async def test_same_control_id_from_another_facility_is_not_duplicate(
        store: MessageStore) -> None:
    await store.store([msg("C1", "WARD")])
    (other,) = await store.store([msg("C1", "CLINIC", ack="CLINIC-ACK")])
    assert (other.ack, other.duplicate) == ("CLINIC-ACK", False)
    assert await accepted_rows(store, "C1", "CLINIC") == 1


async def test_duplicates_inside_one_batch(store: MessageStore) -> None:
    results = await store.store([msg("C1", ack="A1"), msg("C2", ack="A2"),
                                 msg("C1", ack="A1-again")])
    assert [(r.ack, r.duplicate) for r in results] == [("A1", False), ("A2", False),
                                                       ("A1", True)]
    assert len(await store.find(control_id="C1")) == 1


async def test_a_mixed_batch_maps_every_result_to_its_own_row(store: MessageStore) -> None:
    """Messages without MSH-10, rejected ones with and without it, new ones, a resend of a
    stored one and a repeat inside the batch, together: each new message's id is its row's."""
    await store.store([msg("OLD", ack="A-OLD")])
    batch = [msg(None, raw=b"no-id-1"), msg("R1", status=REJECTED, raw=b"rejected-1"),
             msg("N1", raw=b"new-1"), msg("OLD", ack="B-OLD"), msg(None, raw=b"no-id-2"),
             msg("N1", ack="again"), msg("R1", status=REJECTED, raw=b"rejected-2"),
             msg("N2", raw=b"new-2"), msg(None, status=REJECTED, raw=b"rejected-3")]
    results = await store.store(batch)
    assert [r.duplicate for r in results] == [False, False, False, True, False, True, False,
                                              False, False]
    assert results[3].ack == "A-OLD" and results[5].ack == batch[2].ack
    stored = {m.id: m for m in await store.find(limit=100)}
    raw_of = {p.id: bytes(p.raw) for p in await store.unpublished(100)}
    for item, result in zip(batch, results, strict=True):
        if result.duplicate:
            assert result.id is None
            continue
        assert result.id in stored
        assert (stored[result.id].control_id, stored[result.id].status) == (item.control_id,
                                                                            item.status)
        if item.status == ACCEPTED:
            assert raw_of[result.id] == item.raw


async def test_an_empty_control_id_is_a_key_like_any_other(store: MessageStore) -> None:
    """The unique index counts "" as a control id; so does the duplicate check (the
    listener itself stores a missing MSH-10 as None)."""
    first, second = await store.store([msg("", ack="A-empty"), msg("", ack="B-empty")])
    assert (first.duplicate, second.duplicate, second.ack) == (False, True, "A-empty")


async def test_rejected_does_not_block_later_accepted(store: MessageStore) -> None:
    (bad,) = await store.store([msg("C1", status=REJECTED, ack="AE-ACK")])
    (bad_again,) = await store.store([msg("C1", status=REJECTED, ack="AE-ACK-2")])
    (fixed,) = await store.store([msg("C1", ack="AA-ACK")])
    assert [(r.ack, r.duplicate) for r in (bad, bad_again, fixed)] == [
        ("AE-ACK", False), ("AE-ACK-2", False), ("AA-ACK", False)]
    (resend,) = await store.store([msg("C1", ack="AA-ACK-2")])
    assert (resend.ack, resend.duplicate) == ("AA-ACK", True)
    counts = await store.count_by_status()
    assert (counts[ACCEPTED], counts[REJECTED]) == (1, 2)


# -- outbox: unpublished, mark_published, backlog, requeue, republish ------------------------


async def test_unpublished_in_id_order_until_marked_published(store: MessageStore) -> None:
    await store.store([msg("C1"), msg("C2", status=REJECTED), msg("C3"), msg("C4")])
    pending = await store.unpublished(limit=10)
    assert [p.control_id for p in pending] == ["C1", "C3", "C4"]
    assert [p.id for p in pending] == sorted(p.id for p in pending)
    assert (pending[0].raw, pending[0].patient_key, pending[0].charset) == (
        msg("C1").raw, "123@HOSP", "ascii")
    assert [p.control_id for p in await store.unpublished(limit=2)] == ["C1", "C3"]
    assert await store.backlog() == 3

    await store.mark_published([pending[0].id, pending[1].id], T0 + timedelta(seconds=1))
    assert [p.control_id for p in await store.unpublished(limit=10)] == ["C4"]
    assert await store.backlog() == 1
    await store.mark_published([], T0)  # no-op


async def test_requeue_unprocessed_only_before_cutoff(store: MessageStore) -> None:
    await store.store([msg("C1"), msg("C2"), msg("C3")])
    ids = {p.control_id: p.id for p in await store.unpublished(10)}
    await store.mark_published([ids["C1"], ids["C2"]], T0)
    await store.mark_published([ids["C3"]], T0 + timedelta(hours=1))
    await store.record_outcomes([Outcome(ids["C2"], PROCESSED)], T0 + timedelta(minutes=1))

    assert await store.requeue_unprocessed(T0 + timedelta(minutes=30)) == 1
    assert [p.control_id for p in await store.unpublished(10)] == ["C1"]


async def test_republish_requeues_non_rejected_by_facility_and_since(
        store: MessageStore) -> None:
    await store.store([msg("C1", at=T0), msg("C2", at=T0 + timedelta(hours=1)),
                       msg("C3", "CLINIC", at=T0 + timedelta(hours=1)),
                       msg("C4", status=REJECTED, at=T0 + timedelta(hours=1))])
    ids = [p.id for p in await store.unpublished(10)]
    await store.mark_published(ids, T0)
    await store.record_outcomes([Outcome(ids[1], DEADLETTERED, "bad PV1")], T0)

    assert await store.republish(T0 + timedelta(minutes=30), "WARD") == 1
    (again,) = await store.unpublished(10)
    assert again.control_id == "C2"
    (row,) = await store.find(control_id="C2")
    assert row.status == ACCEPTED
    assert await store.republish(None, None) == 3


# -- outcomes and counts ---------------------------------------------------------------------


async def test_record_outcomes_sets_status_reason_and_time(store: MessageStore) -> None:
    await store.store([msg("C1"), msg("C2"), msg("C3", status=REJECTED)])
    ids = {m.control_id: m.id for m in await store.find()}
    at = T0 + timedelta(minutes=2)
    await store.record_outcomes([
        Outcome(ids["C1"], PROCESSED), Outcome(ids["C2"], DEADLETTERED, "PV1-3: no location"),
        Outcome(ids["C3"], PROCESSED),
    ], at)
    rows = {m.control_id: m for m in await store.find()}
    assert (rows["C1"].status, rows["C1"].reason, utc(rows["C1"].processed_at)) == (
        PROCESSED, None, at)
    assert (rows["C2"].status, rows["C2"].reason) == (DEADLETTERED, "PV1-3: no location")
    assert (rows["C3"].status, rows["C3"].reason, rows["C3"].processed_at) == (
        REJECTED, "PID-3: missing", None)
    # Idempotent: the same outcome again changes nothing.
    await store.record_outcomes([Outcome(ids["C2"], DEADLETTERED, "PV1-3: no location")], at)
    assert (await store.count_by_status()) == {ACCEPTED: 0, PROCESSED: 1, DEADLETTERED: 1,
                                               REJECTED: 1}
    await store.record_outcomes([], at)  # no-op


async def test_the_first_publication_time_stays(store: MessageStore) -> None:
    """The relay marks late: an outcome carrying the record's time sets ``published_at``
    where the relay has not, and neither overwrites the other."""
    await store.store([msg("C1"), msg("C2"), msg("C3")])
    ids = {m.control_id: m.id for m in await store.find()}
    sent, marked, done = (T0 + timedelta(seconds=n) for n in (1, 2, 3))
    await store.mark_published([ids["C2"]], marked)  # the relay first
    await store.record_outcomes([
        Outcome(ids["C1"], PROCESSED, None, T0, sent), Outcome(ids["C2"], PROCESSED, None, T0, sent),
        Outcome(ids["C3"], DEADLETTERED, "PV1-3: no location", T0),  # no record time
    ], done)
    await store.mark_published([ids["C1"], ids["C2"], ids["C3"]], sent)  # the relay late
    rows = {m.control_id: m for m in await store.find()}
    # Without the record's time an outcome stands for it with its own.
    assert {k: utc(r.published_at) for k, r in rows.items() if r.published_at} == {
        "C1": sent, "C2": marked, "C3": done}
    assert await store.backlog() == 0


async def test_a_late_mark_leaves_a_replayed_message_to_be_published(store: MessageStore) -> None:
    """A mark for a publication that an outcome followed, and a replay then undid, changes
    nothing: the replayed message stays queued. A message replayed before it was published
    again, and not processed since, is marked."""
    await store.store([msg("C1"), msg("C2")])
    ids = {m.control_id: m.id for m in await store.find()}
    sent = T0 + timedelta(seconds=1)
    await store.record_outcomes([Outcome(ids["C1"], PROCESSED, None, T0, sent),
                                 Outcome(ids["C2"], PROCESSED, None, T0, sent)],
                                T0 + timedelta(seconds=2))
    assert await store.republish(None, None) == 2
    await store.mark_published([ids["C1"]], sent)  # the first publication, marked late
    await store.mark_published([ids["C2"]], T0 + timedelta(seconds=3))  # published again
    assert [p.control_id for p in await store.unpublished(10)] == ["C1"]


async def test_backlog_and_count_by_status_start_at_zero(store: MessageStore) -> None:
    assert await store.backlog() == 0
    assert await store.count_by_status() == {ACCEPTED: 0, PROCESSED: 0, DEADLETTERED: 0,
                                             REJECTED: 0}
    await store.store([msg("C1"), msg("C2"), msg("C3", status=REJECTED)])
    assert await store.backlog() == 2
    assert (await store.count_by_status())[ACCEPTED] == 2


# -- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize("received_at", [
    T0, T0.replace(microsecond=123456),
    pytest.param(datetime(2024, 3, 1, 10, 30, 15, tzinfo=timezone(timedelta(hours=2))),
                 id="utc+2"),
])
async def test_timestamps_round_trip_as_the_same_instant(
        store: MessageStore, received_at: datetime, request: pytest.FixtureRequest) -> None:
    await store.store([msg("C1", at=received_at)])
    (pending,) = await store.unpublished(1)
    published = T0 + timedelta(seconds=3, microseconds=5)
    processed = T0 + timedelta(seconds=9)
    await store.mark_published([pending.id], published)
    await store.record_outcomes([Outcome(pending.id, PROCESSED)], processed)
    (row,) = await store.find(control_id="C1")
    assert utc(pending.received_at) == received_at
    assert utc(row.received_at) == received_at
    assert utc(row.published_at) == published
    assert utc(row.processed_at) == processed


# -- concurrency -----------------------------------------------------------------------------


def _miss_next_duplicate_check(store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the next duplicate check see nothing (SQL adapters only), as when another process
    commits the same key between our check and our insert: the insert must then hit the unique
    index (IntegrityError) and the store take its one-by-one retry path. Returns a list that
    counts the duplicate checks made afterwards.
    """
    calls: list[int] = []
    if not isinstance(store, SqlAlchemyMessageStore):
        return calls
    check = store_module._SqliteRows.known_acks

    def blind_once(self: Any, keys: set[tuple[str, str]]) -> Any:
        calls.append(len(keys))
        return {} if len(calls) == 1 else check(self, keys)

    monkeypatch.setattr(store_module._SqliteRows, "known_acks", blind_once)
    return calls


async def test_a_key_committed_by_another_process_meanwhile_is_a_duplicate(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await store.store([msg("K1", ack="A-K1"), msg("K2", ack="A-K2")])
    calls = _miss_next_duplicate_check(store, monkeypatch)
    second = await store.store([msg("K2", ack="B-K2"), msg("K3", ack="B-K3")])

    for key in ("K1", "K2", "K3"):
        assert await accepted_rows(store, key, "WARD") == 1, key
    assert [r.duplicate for r in first] == [False, False]
    assert [(r.duplicate, r.ack) for r in second] == [(True, "A-K2"), (False, "B-K3")]
    if isinstance(store, SqlAlchemyMessageStore) and store._pg is None:
        # (PostgreSQL's hot path has no check before its insert to miss: one
        # INSERT ... ON CONFLICT DO NOTHING; see the two-listener test below.)
        assert len(calls) > 1, "the IntegrityError retry path was not taken"


async def test_two_listeners_storing_the_same_keys_at_once(store: MessageStore) -> None:
    """Two listener processes (on PostgreSQL: two driver connections) store overlapping
    batches at the same moment: one row per key, and the loser answers with the winner's ACK."""
    other = SqlAlchemyMessageStore(store._db) if isinstance(store, SqlAlchemyMessageStore) \
        else store
    try:
        for round_ in range(20):
            keys = [f"R{round_}-{n}" for n in range(6)]
            a, b = await asyncio.gather(
                store.store([msg(k, ack=f"A-{k}") for k in keys]),
                other.store([msg(k, ack=f"B-{k}") for k in reversed(keys)]))
            for ra, rb in zip(a, reversed(b), strict=True):
                assert sorted([ra.duplicate, rb.duplicate]) == [False, True]
                assert ra.ack == rb.ack
        for round_ in range(20):
            for n in range(6):
                assert await accepted_rows(store, f"R{round_}-{n}", "WARD") == 1
    finally:
        if other is not store:
            await other.close()  # type: ignore[union-attr]


async def test_concurrent_stores_keep_one_accepted_row_per_key(store: MessageStore) -> None:
    first = [msg("K1", ack="A-K1"), msg("K2", ack="A-K2")]
    second = [msg("K2", ack="B-K2"), msg("K3", ack="B-K3")]
    a, b = await asyncio.gather(store.store(first), store.store(second))

    for key in ("K1", "K2", "K3"):
        assert await accepted_rows(store, key, "WARD") == 1, key
    k2 = [a[1], b[0]]
    assert sorted(r.duplicate for r in k2) == [False, True]
    assert k2[0].ack == k2[1].ack  # the loser answers with the winner's ACK


async def test_many_concurrent_resends_of_one_message(store: MessageStore) -> None:
    results = await asyncio.gather(*(store.store([msg("K1", ack=f"ACK-{i}")])
                                     for i in range(8)))
    flat = [r for (r,) in results]
    assert sum(not r.duplicate for r in flat) == 1
    assert len({r.ack for r in flat}) == 1
    assert await accepted_rows(store, "K1", "WARD") == 1


async def test_store_returns_new_row_ids_in_order_and_none_for_resends(
        store: MessageStore) -> None:
    first = await store.store([msg("I1"), msg("I2"), msg("I1")])
    ids = [r.id for r in first]
    assert ids[0] is not None and ids[1] is not None and ids[1] > ids[0]
    assert ids[2] is None and first[2].duplicate
    pending = await store.unpublished(10)
    assert [p.id for p in pending] == ids[:2]


async def test_unpublished_can_skip_recent_rows(store: MessageStore) -> None:
    await store.store([msg("OLD", at=T0), msg("NEW", at=T0 + timedelta(minutes=5))])
    old = await store.unpublished(10, received_before=T0 + timedelta(minutes=1))
    assert [p.control_id for p in old] == ["OLD"]


async def test_decided_names_the_messages_with_an_outcome(store: MessageStore) -> None:
    results = await store.store([msg("D1"), msg("D2"), msg("D3")])
    ids = [r.id for r in results]
    assert all(i is not None for i in ids)
    await store.record_outcomes([Outcome(ids[0], "processed", None, T0),  # type: ignore[arg-type]
                                 Outcome(ids[1], "deadlettered", "PV1-45: bad")], T0)
    assert await store.decided([(i, T0) for i in ids]) == {ids[0], ids[1]}  # type: ignore[misc]
    assert await store.decided([]) == set()


async def test_outcomes_for_another_databases_message_change_nothing(
        store: MessageStore) -> None:
    """A record naming our id but another receipt time (a topic shared with another
    deployment, or an older data dir) must not touch our row."""
    (result,) = await store.store([msg("X1")])
    assert result.id is not None
    elsewhere = T0 + timedelta(days=1)
    await store.record_outcomes([Outcome(result.id, PROCESSED, None, elsewhere)], T0)
    (row,) = await store.find(control_id="X1")
    assert row.status == ACCEPTED
    assert await store.decided([(result.id, elsewhere)]) == set()
    await store.record_outcomes([Outcome(result.id, PROCESSED, None, T0)], T0)
    assert await store.decided([(result.id, T0)]) == {result.id}


@pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)
async def test_oldest_in_flight_age_is_that_of_the_oldest_accepted_message(
        store: MessageStore) -> None:
    from adt_listener.store import oldest_in_flight_age

    assert isinstance(store, SqlAlchemyMessageStore)
    now = T0 + timedelta(minutes=10)

    async def age() -> float:
        return await store._db.run(lambda conn: oldest_in_flight_age(conn, now))

    assert await age() == 0.0  # nothing waits
    await store.store([msg("OLD", at=T0, status=REJECTED), msg("C1", at=T0 + timedelta(minutes=4)),
                       msg("C2", at=T0 + timedelta(minutes=7))])
    assert await age() == 360.0  # C1; a rejected message never waits for the workers
    (c1,) = await store.find(control_id="C1")
    await store.record_outcomes([Outcome(c1.id, PROCESSED)], now)
    assert await age() == 180.0  # C2



# -- PostgreSQL's driver connections ----------------------------------------------------------


@pytest.fixture
async def pg_store(store: MessageStore) -> SqlAlchemyMessageStore:
    assert isinstance(store, SqlAlchemyMessageStore) and store._pg is not None
    return store


only_postgresql = pytest.mark.parametrize("store", ["postgresql"], indirect=True)


async def _backends(store: SqlAlchemyMessageStore, sql: str) -> list[Any]:
    """Run ``sql`` on a connection of the engine (not the store's own ones)."""
    return await store._db.run(lambda conn: list(conn.execute(text(sql))))


@contextlib.asynccontextmanager
async def row_locked(store: SqlAlchemyMessageStore, message_id: int,
                     seconds: float) -> AsyncIterator[None]:
    """Another transaction holds the message's row (``FOR UPDATE``) for ``seconds``."""
    blocker = open_database(store._db.url)  # type: ignore[attr-defined]
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hold_lock(conn: Any) -> None:
        conn.execute(text("SELECT id FROM messages WHERE id = :id FOR UPDATE"), {"id": message_id})
        loop.call_soon_threadsafe(started.set)
        conn.execute(text(f"SELECT pg_sleep({seconds})"))

    holding = asyncio.ensure_future(blocker.run(hold_lock))
    try:
        await started.wait()
        yield
    finally:
        await holding
        await blocker.dispose()


@only_postgresql
async def test_storing_does_not_wait_behind_the_relays_statements(
        pg_store: SqlAlchemyMessageStore) -> None:
    """The ACK's insert has a connection of its own: a slow statement of the relay or the
    normaliser (here: an outcome update held up by a row lock) does not hold it up."""
    (first,) = await pg_store.store([msg("S1")])
    assert first.id is not None
    async with row_locked(pg_store, first.id, 1.5):
        recording = asyncio.ensure_future(pg_store.record_outcomes(
            [Outcome(first.id, PROCESSED, None, T0, T0)], T0 + timedelta(seconds=1)))
        await asyncio.sleep(0.1)
        assert not recording.done()  # waits for the row lock
        (second,) = await asyncio.wait_for(pg_store.store([msg("S2")]), timeout=1.0)
        assert not second.duplicate and not recording.done()
        await recording
    assert [m.status for m in await pg_store.find(control_id="S1")] == [PROCESSED]


@only_postgresql
async def test_the_relays_late_mark_skips_a_row_another_transaction_holds(
        pg_store: SqlAlchemyMessageStore) -> None:
    """The row is the normaliser's (its outcome sets published_at) or a replay's (which clears
    it): the mark leaves it and returns at once. Waiting deadlocked with the normaliser."""
    s1, s2 = await pg_store.store([msg("S1"), msg("S2")])
    assert s1.id is not None and s2.id is not None
    async with row_locked(pg_store, s1.id, 1.0):
        await asyncio.wait_for(pg_store.mark_published([s1.id, s2.id], T0), timeout=0.5)
    assert [p.control_id for p in await pg_store.unpublished(10)] == ["S1"]


@only_postgresql
async def test_after_the_server_drops_the_connections_the_next_batch_reconnects(
        pg_store: SqlAlchemyMessageStore) -> None:
    """The server drops the listener's connections (a restart, a failover, an admin): a
    batch sent on a broken connection fails (no ACK, the sender sends again) and the next
    one opens a new connection and stores; the same for the relay's connection. (When the
    driver noticed the drop while idle, the first try already reconnects.)"""
    (first,) = await pg_store.store([msg("B1")])
    await pg_store.mark_published([first.id or 0], T0)
    await _backends(pg_store, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                              "AND application_name = ''")
    try:
        (again,) = await pg_store.store([msg("B2")])
    except Exception:
        (again,) = await pg_store.store([msg("B2")])
    assert not again.duplicate
    try:
        await pg_store.mark_published([again.id or 0], T0)
    except Exception:
        await pg_store.mark_published([again.id or 0], T0)
    assert [m.published_at is not None for m in await pg_store.find(control_id="B2")] == [True]


async def _plan(connection: Any, statement: str, args: str, mode: str | None = None) -> str:
    """The plan the connection runs ``statement`` with (``mode``: a plan_cache_mode)."""
    from adt_listener import pg_store as module

    if mode:
        await connection.fetch(f"SET plan_cache_mode = {mode}")
    try:
        await connection.fetch(f"PREPARE probe AS {getattr(module, statement)}")
        plan = "\n".join(r[0] for r in await connection.fetch(f"EXPLAIN EXECUTE probe({args})"))
        await connection.fetch("DEALLOCATE probe")
    finally:
        if mode:
            await connection.fetch("RESET plan_cache_mode")
    return plan


@pytest.mark.parametrize(("statement", "args", "index"), [
    ("_DECIDED", "'{1,2,3}'", "pk_messages"),
    ("_KNOWN", "'{F1,F2}', '{C1,C2}'", "uq_messages_facility_control_id"),
])
@only_postgresql
async def test_the_hot_paths_lookups_probe_the_index_whatever_the_plan_kept(
        pg_store: SqlAlchemyMessageStore, statement: str, args: str, index: str) -> None:
    """The server keeps a generic plan from a prepared statement's first executions, when
    ``messages`` is nearly empty, until its statistics change (never, without autovacuum).
    Kept from the empty table, the normaliser's check for decided messages read the status
    index (every message decided so far: 1.4 ms a batch in bench/e2e), and the listener's
    lookup of resent keys joined over every message: each must probe the index once a key."""
    assert pg_store._pg is not None
    connection = pg_store._pg._kept_plans
    plan = await _plan(connection, statement, args, "force_generic_plan")
    assert f"Index Scan using {index}" in plan and "Seq Scan" not in plan \
        and "ix_messages_status" not in plan and "Hash" not in plan, plan


@pytest.mark.parametrize(("statement", "args"), [
    ("_OUTCOMES", "now(), '{-1,-2}', '{null,null}', '{processed,processed}', '{null,null}', "
                  "'{null,null}'"),
    ("_PUBLISHED", "now(), '{-1,-2}'"),
])
@only_postgresql
async def test_the_hot_paths_updates_by_id_are_planned_for_the_table_they_meet(
        pg_store: SqlAlchemyMessageStore, statement: str, args: str) -> None:
    """An UPDATE joined to a batch's ids has no form whose generic plan is right at every
    size: kept from the empty table, the outcomes' plan was a hash join over every message
    (3 ms a batch in bench/e2e, growing with the store). The connection running them plans
    each execution for the table as it is: grown, never analysed, a probe an id."""
    from adt_listener import pg_store as module

    assert pg_store._pg is not None
    connection = pg_store._pg._fresh_plans
    await connection.fetch(f"PREPARE probe AS {getattr(module, statement)}")
    try:
        for _ in range(6):  # the server's own choice between custom and generic plans
            await connection.fetch(f"EXECUTE probe({args})")  # starts after five executions
        for start in range(0, 3000, 500):
            await pg_store.store([msg(f"G{n}") for n in range(start, start + 500)])
        plan = "\n".join(r[0] for r in await connection.fetch(f"EXPLAIN EXECUTE probe({args})"))
    finally:
        await connection.fetch("DEALLOCATE probe")
    assert "Index Scan using pk_messages" in plan and "Seq Scan" not in plan \
        and "Hash Join" not in plan, plan
