"""Writing many rows at once (transcare/db/upsert.py) on SQLite and PostgreSQL: the rows stored
are those SQLAlchemy's own insert would store (defaults, JSON, times in UTC, serial ids in the
rows' order), a value too long for its column is refused rather than cut, and on PostgreSQL a
batch of any size is one statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import Connection, event, select

from transcare.db.database import Database
from transcare.db.tables import episode_timeline, notifications, outbox, staff, tasks
from transcare.db.upsert import insert_all, insert_new, upsert

NOW = datetime(2026, 12, 4, 8, 30, tzinfo=UTC)
EAST = timezone(timedelta(hours=-5))


def statements(conn: Connection, work: Any) -> list[str]:
    """The statements ``work(conn)`` sends to the database."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])  # (conn, cursor, statement, parameters, context, executemany)

    event.listen(conn, "before_cursor_execute", record)
    try:
        work(conn)
    finally:
        event.remove(conn, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize("count", [1, 3, 700])
async def test_insert_all_stores_every_row_in_order(database: Database, database_url: str,
                                                    count: int) -> None:
    rows = [{"episode_id": f"e{n % 5}", "occurred_at": NOW.astimezone(EAST) + timedelta(minutes=n),
             "type": "note", "detail": {"n": n, "at": "x"}} for n in range(count)]

    def run(conn: Connection) -> tuple[list[str], list[tuple[Any, ...]]]:
        sent = statements(conn, lambda c: insert_all(c, episode_timeline, rows))
        stored = conn.execute(select(
            episode_timeline.c.episode_id, episode_timeline.c.occurred_at,
            episode_timeline.c.source_id, episode_timeline.c.summary, episode_timeline.c.detail,
        ).order_by(episode_timeline.c.id)).all()
        return sent, [tuple(r) for r in stored]

    sent, stored = await database.write(run)
    # Columns the rows lack get their defaults; times come back in UTC; ids follow the rows.
    assert stored == [(f"e{n % 5}", NOW + timedelta(minutes=n), "", "", {"n": n, "at": "x"})
                      for n in range(count)]
    if database_url.startswith("postgresql"):
        assert len(sent) == 1


async def test_insert_all_refuses_a_naive_time(database: Database) -> None:
    row = {"topic": "t", "key": "k", "payload": "{}", "created_at": NOW.replace(tzinfo=None)}
    # SQLAlchemy wraps its type's ValueError in a StatementError; the bulk form raises it as is.
    with pytest.raises((ValueError, sqlalchemy.exc.StatementError), match="naive datetime"):
        await database.write(lambda c: insert_all(c, outbox, [row]))


async def test_a_value_too_long_for_its_column_is_never_cut(database: Database,
                                                           database_url: str) -> None:
    """An explicit cast to VARCHAR(n) would cut the value to fit: PostgreSQL refuses it
    instead, as a plain insert does; SQLite, which has no lengths, keeps it whole."""
    row = {"topic": "t" * 81, "key": "k", "payload": "{}", "created_at": NOW}  # VARCHAR(80)
    if database_url.startswith("postgresql"):
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="too long"):
            await database.write(lambda c: insert_all(c, outbox, [row]))
        assert await database.run(lambda c: c.execute(select(outbox.c.topic)).all()) == []
    else:
        await database.write(lambda c: insert_all(c, outbox, [row]))
        assert await database.run(lambda c: c.execute(select(outbox.c.topic)).scalars().all()) == [
            "t" * 81]


def _notification(n: int, kind: str = "task_assigned") -> dict[str, Any]:
    return {"id": f"n{n}", "task_id": "t1", "recipient_id": "CC-1", "channel": "inbox",
            "kind": kind, "payload": {"n": n}, "status": "pending", "attempts": 0,
            "next_attempt_at": NOW, "created_at": NOW}


async def test_insert_new_returns_the_rows_it_inserted(database: Database) -> None:
    await database.write(lambda c: insert_new(c, notifications, ["id"], [_notification(1)]))
    rows = [_notification(1, "task_reminder"), _notification(2), _notification(2, "task_reminder"),
            _notification(3)]

    def run(conn: Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        new = insert_new(conn, notifications, ["id"], rows, returning=["id"])
        stored = conn.execute(select(notifications.c.id, notifications.c.kind)
                              .order_by(notifications.c.id)).all()
        return sorted(new), [tuple(r) for r in stored]

    new, stored = await database.write(run)
    # The stored row stays; of two new rows with one key, the first is inserted.
    assert new == [("n2",), ("n3",)]
    assert stored == [("n1", "task_assigned"), ("n2", "task_assigned"), ("n3", "task_assigned")]


def _task(task_id: str, title: str, at: datetime) -> dict[str, Any]:
    return {"id": task_id, "episode_id": "e1", "member_id": "m1", "rule_id": "r",
            "type": "post_discharge_contact", "title": title, "status": "open",
            "clinical_at": at, "due_at": at, "detail": {"title": title}, "created_at": at,
            "updated_at": at}


async def test_upsert_updates_all_but_the_kept_columns(database: Database,
                                                      database_url: str) -> None:
    later = NOW + timedelta(hours=1)
    await database.write(lambda c: upsert(c, tasks, ["id"], [_task("t1", "first", NOW)]))
    rows = [_task("t1", "second", later), _task("t2", "new", later),
            _task("t2", "newer", later + timedelta(hours=1)), _task("t1", "third", later)]

    def run(conn: Connection) -> tuple[list[str], list[tuple[Any, ...]]]:
        sent = statements(conn, lambda c: upsert(c, tasks, ["id"], rows, keep=["created_at"]))
        stored = conn.execute(select(tasks.c.id, tasks.c.title, tasks.c.detail,
                                     tasks.c.created_at, tasks.c.updated_at)
                              .order_by(tasks.c.id)).all()
        return sent, [tuple(r) for r in stored]

    sent, stored = await database.write(run)
    # Two rows with one key apply in turn: the later values win, a kept column keeps the
    # first stored value (t1: the earlier upsert; t2: its first row in this batch).
    assert stored == [("t1", "third", {"title": "third"}, NOW, later),
                      ("t2", "newer", {"title": "newer"}, later, later + timedelta(hours=1))]
    if database_url.startswith("postgresql"):
        assert len(sent) == 1


async def test_upsert_of_keys_only_leaves_the_stored_row(database: Database) -> None:
    row = {"staff_id": "S1", "name": "A", "role": "care_coordinator", "updated_at": NOW}
    await database.write(lambda c: upsert(c, staff, ["staff_id"], [row]))
    await database.write(lambda c: upsert(c, staff, ["staff_id"], [{**row, "name": "B"}],
                                          keep=["name", "role", "updated_at"]))
    got = await database.run(lambda c: c.execute(select(staff.c.name, staff.c.email)).all())
    assert [tuple(r) for r in got] == [("A", "")]


async def test_rows_are_taken_as_sqlalchemy_takes_them(database: Database) -> None:
    """Booleans as 0 and 1 too; a later row without a column the first has is refused,
    naming it (a bare KeyError would read as "not found" to the API)."""
    rows = [{"staff_id": f"S{n}", "role": "support", "active": n, "updated_at": NOW}
            for n in (0, 1)]
    await database.write(lambda c: upsert(c, staff, ["staff_id"], rows))
    got = await database.run(lambda c: c.execute(
        select(staff.c.staff_id, staff.c.active).order_by(staff.c.staff_id)).all())
    assert [tuple(r) for r in got] == [("S0", False), ("S1", True)]
    uneven = [{"topic": "t", "key": "k1", "payload": "{}", "created_at": NOW},
              {"topic": "t", "key": "k2", "created_at": NOW}]
    with pytest.raises((ValueError, sqlalchemy.exc.StatementError), match="payload"):
        await database.write(lambda c: insert_all(c, outbox, uneven))


def test_rows_with_a_null_key_are_never_merged() -> None:
    """NULL equals nothing: two rows whose key holds None stay two rows (the database then
    treats them as distinct keys, as it did row by row)."""
    from transcare.db.upsert import _first_of_each_key, _merged_by_key

    rows = [{"a": None, "b": 1}, {"a": None, "b": 2}, {"a": "x", "b": 3}, {"a": "x", "b": 4}]
    assert _merged_by_key(rows, ["a"], ()) == [{"a": None, "b": 1}, {"a": None, "b": 2},
                                               {"a": "x", "b": 4}]
    assert _first_of_each_key(rows, ["a"]) == rows[:3]
