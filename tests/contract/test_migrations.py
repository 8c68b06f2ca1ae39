"""The migrations build the schema ``transcare/db/tables.py`` describes (SQLite and
PostgreSQL): Alembic's autogenerate finds nothing to add, drop or change, so an index or a
column added to the tables without a migration (or the other way round) fails here."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from tests.adt_builders import T0, adt
from transcare.db.database import Database, open_database
from transcare.db.migrate import upgrade
from transcare.db.tables import (
    UNPUBLISHED,
    match_review_identifiers,
    match_reviews,
    messages,
    metadata,
)


async def test_the_migrated_schema_is_the_tables_schema(database: Database) -> None:
    def differences(conn: Any) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    assert await database.run(differences) == []


def _index_definition(conn: Any, name: str) -> str:
    if conn.dialect.name == "postgresql":
        query = f"SELECT indexdef FROM pg_indexes WHERE indexname = '{name}'"
    else:
        query = f"SELECT sql FROM sqlite_master WHERE type = 'index' AND name = '{name}'"
    return " ".join(str(conn.exec_driver_sql(query).scalar_one()).split())


async def test_partial_indexes_keep_their_condition(database: Database) -> None:
    """Autogenerate does not compare an index's WHERE: the partial indexes (duplicate
    detection ignores rejected messages; the relay's backlog; the scheduler's pending steps)
    are checked here, as each database stores them."""
    unique = await database.run(lambda c: _index_definition(c, "uq_messages_facility_control_id"))
    assert "UNIQUE" in unique.upper()
    assert "WHERE" in unique.upper() and "status" in unique and "'rejected'" in unique
    backlog = await database.run(lambda c: _index_definition(c, "ix_messages_unpublished"))
    assert "WHERE" in backlog.upper() and "published_at IS NULL" in backlog
    assert "'accepted'" in backlog
    steps = await database.run(lambda c: _index_definition(c, "ix_tasks_steps_pending"))
    assert "WHERE" in steps.upper() and "next_step_at IS NOT NULL" in steps
    assert "'open'" in steps and "'claimed'" in steps


async def test_the_relays_backlog_query_reads_its_partial_index(database: Database) -> None:
    """The backlog condition is written as the index's own (a literal status), so each
    database answers the relay's oldest-first read from the small index (SQLite's planner
    chose ix_messages_status over a partial index on id alone)."""
    query = (select(messages.c.id).where(UNPUBLISHED).order_by(messages.c.id).limit(100))

    def plan(conn: Any) -> str:
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            return " ".join(str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))
        return " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))

    assert "ix_messages_unpublished" in await database.run(plan)


async def test_0008_fills_in_the_identifiers_of_the_reviews_waiting(empty_database_url: str) -> None:
    """Reviews waiting when 0008 runs are found by a decision like new ones: their events'
    PID-3 identifiers with an authority (normalised as matching compares them) are filled in,
    an event without one gets one empty row; a decided review, or one without its event
    (before 0007), gets none."""
    await asyncio.to_thread(upgrade, empty_database_url, "0007")
    waiting = adt("A04", "w1", mrn=" x-1 ", authority="stmarys", facility="STMARYS")
    twice = adt("A04", "w2", mrn="Y-2", authority="", facility="STMARYS")
    cx = twice.patient.identifiers[0].model_copy(update={"assigning_facility": "STM"})
    twice = twice.model_copy(update={"patient": twice.patient.model_copy(
        update={"identifiers": (cx, cx)})})
    review = {"facility": "STMARYS", "reason": "ambiguous", "candidates": [],
              "created_at": T0}
    db = open_database(empty_database_url)
    try:
        await db.write(lambda c: c.execute(match_reviews.insert(), [
            {**review, "event_id": "STMARYS|w1", "message_id": 1, "status": "pending",
             "event": waiting.model_dump_json()},
            {**review, "event_id": "STMARYS|w2", "message_id": 2, "status": "pending",
             "event": twice.model_dump_json()},
            {**review, "event_id": "STMARYS|d1", "message_id": 3, "status": "resolved",
             "event": waiting.model_dump_json()},
            {**review, "event_id": "STMARYS|old", "message_id": 4, "status": "pending",
             "event": None},
            {**review, "event_id": "STMARYS|bare", "message_id": 5, "status": "pending",
             "event": adt("A04", "b1", mrn="Z-3", authority="", facility="STMARYS")
             .model_dump_json()}]))
    finally:
        await db.dispose()
    await asyncio.to_thread(upgrade, empty_database_url)
    db = open_database(empty_database_url)
    try:
        ids = {r.event_id: r.id for r in await db.run(
            lambda c: c.execute(select(match_reviews.c.event_id, match_reviews.c.id)).all())}
        filled = await db.run(lambda c: sorted(tuple(r) for r in c.execute(
            select(match_review_identifiers))))
    finally:
        await db.dispose()
    assert filled == sorted([("X-1", "STMARYS", ids["STMARYS|w1"]),
                             ("Y-2", "STM", ids["STMARYS|w2"]),
                             ("", "", ids["STMARYS|bare"])])  # indexed, nothing to find it by
