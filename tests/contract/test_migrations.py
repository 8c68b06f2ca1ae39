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
