"""Apply Alembic migrations programmatically (``transcare db upgrade``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from transcare.db.engine import async_url, is_sqlite
from transcare.db.tables import messages
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


def upgrade_service(settings: Settings) -> int:
    """Migrate every database the service uses (:func:`database_urls`), then move messages
    an earlier version stored in the service database into the message store's own file;
    the number of messages moved."""
    for url in database_urls(settings):
        upgrade(url)
    return move_messages_to_store(settings)


def move_messages_to_store(settings: Settings) -> int:
    """On SQLite, move rows of the service database's ``messages`` table (stored there by a
    version before the message store had a file of its own) into the store's file, ids kept:
    unpublished and unprocessed messages are published and processed from there, their
    history stays visible, and new ids continue after theirs (an event id of a message
    without MSH-10 is derived from its id). Safe to run again after an interruption: rows
    already copied are not copied twice. Run it while no listener runs (``db upgrade``,
    ``up`` before it starts the parts)."""
    main, store = settings.effective_database_url, settings.effective_message_store_url
    if main == store or not (is_sqlite(main) and is_sqlite(store)):
        return 0
    main_path, store_path = make_url(main).database, make_url(store).database
    if not main_path or not store_path or ":memory:" in (main_path, store_path):
        return 0
    columns = ", ".join(c.name for c in messages.columns)
    conn = sqlite3.connect(main_path, timeout=30, isolation_level=None)
    try:
        if not conn.execute("SELECT count(*) FROM main.messages").fetchone()[0]:
            return 0
        conn.execute("ATTACH DATABASE ? AS store", (store_path,))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"INSERT INTO store.messages ({columns}) SELECT {columns} FROM main.messages "
                         "WHERE id NOT IN (SELECT id FROM store.messages)")
            moved = int(conn.execute("DELETE FROM main.messages").rowcount)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return moved
    finally:
        conn.close()
