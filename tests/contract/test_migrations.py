"""The migrations build the schema ``transcare/db/tables.py`` describes (SQLite and
PostgreSQL): Alembic's autogenerate finds nothing to add, drop or change, so an index or a
column added to the tables without a migration (or the other way round) fails here."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from transcare.db.database import Database
from transcare.db.tables import metadata


async def test_the_migrated_schema_is_the_tables_schema(database: Database) -> None:
    def differences(conn: Any) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    assert await database.run(differences) == []


async def test_partial_indexes_keep_their_condition(database: Database) -> None:
    """Autogenerate does not compare an index's WHERE: the one partial index (duplicate
    detection ignores rejected messages) is checked here, as each database stores it."""
    def definition(conn: Any) -> str:
        if conn.dialect.name == "postgresql":
            query = ("SELECT indexdef FROM pg_indexes "
                     "WHERE indexname = 'uq_messages_facility_control_id'")
        else:
            query = ("SELECT sql FROM sqlite_master "
                     "WHERE type = 'index' AND name = 'uq_messages_facility_control_id'")
        return str(conn.exec_driver_sql(query).scalar_one())

    stored = " ".join((await database.run(definition)).split())
    assert "UNIQUE" in stored.upper()
    assert "WHERE" in stored.upper() and "status" in stored and "'rejected'" in stored
