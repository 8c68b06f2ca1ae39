"""Apply Alembic migrations programmatically (``transcare db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from transcare.db.engine import async_url
from transcare.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest). Safe to run repeatedly."""
    command.upgrade(alembic_config(database_url), revision)


def database_urls(settings: Settings) -> list[str]:
    """The databases a service uses, each migrated with the same revisions: the service's,
    and the message store's when it is another (on SQLite, a file of its own; see
    ``Settings.effective_message_store_url``)."""
    return list(dict.fromkeys([settings.effective_database_url,
                               settings.effective_message_store_url]))
