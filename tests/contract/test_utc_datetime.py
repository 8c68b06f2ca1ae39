"""UtcDateTime columns (SQLite and PostgreSQL): aware datetimes at any offset are stored as UTC
and read back aware; on SQLite the listener's own statements (``sqlite_text``) write the text
SQLAlchemy writes, so their rows read, compare and sort like every other."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import StatementError

from transcare.db.database import Database
from transcare.db.tables import outbox, sqlite_text

TIMES = [
    datetime(2026, 12, 4, 1, 2, 3, 456789, tzinfo=UTC),
    datetime(2026, 12, 4, 1, 2, 3, tzinfo=UTC),  # no microseconds: still written with them
    datetime(2026, 3, 8, 1, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
    datetime(2026, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # a year before 1000: zero-padded
]


async def test_aware_times_round_trip_as_utc(database: Database) -> None:
    rows = [{"topic": "t", "key": str(n), "payload": "{}", "created_at": at,
             "published_at": None} for n, at in enumerate(TIMES)]
    await database.write(lambda c: c.execute(insert(outbox), rows))
    got = await database.run(lambda c: c.execute(
        select(outbox.c.created_at, outbox.c.published_at).order_by(outbox.c.key)).all())
    assert [r[0] for r in got] == TIMES
    assert all(r[0].tzinfo == UTC and r[1] is None for r in got)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_stores_sqlalchemys_datetime_text(database: Database) -> None:
    datetime_type: Any = sqlite.DATETIME()
    reference = datetime_type.bind_processor(sqlite.dialect())
    await database.write(lambda c: c.execute(insert(outbox), [
        {"topic": "t", "key": str(n), "payload": "{}", "created_at": at}
        for n, at in enumerate(TIMES)]))
    stored = await database.run(lambda c: list(c.execute(
        text("SELECT created_at FROM outbox ORDER BY key")).scalars()))
    assert stored == [reference(at.astimezone(UTC)) for at in TIMES]
    assert stored == [sqlite_text(at) for at in TIMES]


async def test_a_naive_time_is_refused(database: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        await database.write(lambda c: c.execute(insert(outbox).values(
            topic="t", key="k", payload="{}", created_at=datetime(2026, 1, 1))))


def test_sqlite_text_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        sqlite_text(datetime(2026, 1, 1))
