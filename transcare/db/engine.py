"""Async engine creation with the right settings per backend."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_SYNC_TO_ASYNC = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """Normalise a database URL to its async driver (sqlite -> aiosqlite, postgresql -> asyncpg)."""
    parsed = make_url(url)
    driver = _SYNC_TO_ASYNC.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def json_dumps(value: Any) -> str:
    """JSON columns' text: orjson (the standard library's encoder was 2-3% of the worker's
    time; the text differs only in whitespace)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# For every engine: JSON columns written and read with orjson.
JSON_CODEC: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": orjson.loads}


# SQLite checkpoints (copies the write-ahead log into the database file, with two fsyncs) when
# a commit leaves the log above this many pages: 10,000 pages, about 40 MB, where SQLite's
# default is 1,000. Between checkpoints a page rewritten by many commits (the end of every
# index the worker appends to) is copied once, not once per 4 MB: the worker's commits took
# 0.020 -> 0.013 ms a message (docs/performance.md). The log file stays at most about that size.
SQLITE_CHECKPOINT_PAGES = 10_000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, sqlite_synchronous: str = "NORMAL", **kw: Any) -> AsyncEngine:
    """Create the async engine.

    SQLite runs in WAL mode with ``busy_timeout`` so the listener, the worker and the web
    server can share one file; ``synchronous`` NORMAL survives any process crash (the WAL is
    in the OS cache) and FULL also survives power loss, at the cost of an fsync per commit.
    """
    url = async_url(url)
    kw = {**JSON_CODEC, **kw}
    if is_sqlite(url):
        # One connection per process: SQLite has one writer at a time, and two connections of
        # one process contending for the lock would sleep in SQLite's busy handler (>= 1 ms).
        kw.setdefault("pool_size", 1)
        kw.setdefault("max_overflow", 0)
        kw.setdefault("pool_timeout", 60)
        engine = create_async_engine(url, **kw)
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    kw.setdefault("pool_size", 10)
    kw.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kw)


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
