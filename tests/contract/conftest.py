"""Backends for the contract tests: a migrated SQLite file, and a PostgreSQL database.

The PostgreSQL database is created for the session on the server named by
``TRANSCARE_TEST_POSTGRES_URL``, migrated, and dropped at the end. Without that variable the
PostgreSQL cases are reported as skipped ("did not run"), never silently dropped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.integration.helpers import POSTGRES_ENV  # noqa: F401 (the contract tests import it here)
from transcare.db.database import Database, open_database
from transcare.db.migrate import upgrade
from transcare.db.tables import metadata


async def _migrate(url: str) -> None:
    # upgrade() runs its own event loop (asyncio.run): keep it off the test loop's thread.
    await asyncio.to_thread(upgrade, url)


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str | None]:
    """A fresh, migrated database on the server named by TRANSCARE_TEST_POSTGRES_URL."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        yield None
        return
    name = f"transcare_contract_{uuid.uuid4().hex[:12]}"
    admin_dsn = make_url(server).set(drivername="postgresql")
    admin = await asyncpg.connect(admin_dsn.render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        await _migrate(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path,
                       postgres_url: str | None) -> AsyncIterator[str]:
    """The URL of a migrated, empty database of each kind (PostgreSQL: tables truncated)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.db'}"
        await _migrate(url)
        yield url
        return
    if postgres_url is None:
        pytest.skip(f"PostgreSQL contract tests did not run: set {POSTGRES_ENV}")
    db = open_database(postgres_url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    await db.run(lambda conn: conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY")))
    await db.dispose()
    yield postgres_url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated, empty database of each kind."""
    db = open_database(database_url)
    yield db
    await db.dispose()
