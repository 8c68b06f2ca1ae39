"""The migrations build the schema ``transcare/db/tables.py`` describes (SQLite and
PostgreSQL): Alembic's autogenerate finds nothing to add, drop or change, so an index or a
column added to the tables without a migration (or the other way round) fails here."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from transcare.db.database import Database
from transcare.db.tables import UNPUBLISHED, messages, metadata


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
