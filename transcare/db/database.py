"""Running a unit of database work: one transaction, one function over a sync Connection.

Store adapters write each operation once, as a plain function of a SQLAlchemy ``Connection``;
the :class:`Database` decides how it runs:

- SQLite: a sync engine (the standard ``sqlite3`` driver) on one dedicated thread. A whole
  transaction costs one thread hop, and one thread means one writer per process, so the
  process never contends with itself for SQLite's lock. (aiosqlite hops threads for every
  statement; measured here it cut commit throughput about eightfold.)
- PostgreSQL: the async engine (asyncpg) running the function with ``run_sync``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import OperationalError as DBAPIOperationalError

from transcare.db.engine import (
    JSON_CODEC,
    SQLITE_CHECKPOINT_PAGES,
    async_url,
    create_engine,
    is_sqlite,
)

T = TypeVar("T")


class Database(Protocol):
    """Runs ``fn(connection)`` inside one transaction and returns its result."""

    async def run(self, fn: Callable[[Connection], T]) -> T: ...
    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Like :meth:`run` for a transaction that reads and then writes: on SQLite it takes
        the write lock first (``BEGIN IMMEDIATE``), so two processes never deadlock on the
        upgrade from reader to writer."""
        ...
    async def dispose(self) -> None: ...


class ThreadedSqliteDatabase:
    """SQLite through the sync driver on a single worker thread.

    ``inline``: transactions run on the event loop's own thread instead (the wait for the write
    lock stays asynchronous). For a process whose event loop and database work compete for
    the interpreter anyway (the stream worker): a transaction on a second thread hands the GIL
    back and forth with the loop at every statement, and held SQLite's write lock about twice
    as long as its work takes (measured in ``bench/e2e``); the listener and the web server keep
    the thread, so their loops never stop for a transaction. In either mode the hot path's
    driver transactions (:meth:`run_dbapi`) run on the loop's thread when the write lock is
    free at once, and on the thread only while another process holds it.
    """

    def __init__(self, url: str, synchronous: str = "NORMAL", inline: bool = False) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        # Inline, no statement may wait inside SQLite's busy handler (it would stop the loop):
        # a transaction that finds the lock taken fails at once and is tried again later.
        self._busy_ms = 0 if inline else int(LOCK_WAIT_S * 1000)
        self._engine: Engine = create_sync_engine(
            sync_url, connect_args={"check_same_thread": False, "timeout": self._busy_ms / 1000},
            **JSON_CODEC)
        event.listen(self._engine, "connect", _sqlite_pragmas(synchronous))
        # The driver leaves transactions to us (isolation_level None), and each one starts
        # with an explicit BEGIN: deferred for run(), IMMEDIATE for write().
        event.listen(self._engine, "begin", self._begin)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self._raw: Any = None  # the hot path's own driver connection (see run_dbapi)
        self._raw_on_thread = 0  # run_dbapi transactions handed to the thread, not yet done
        self._immediate = False  # only touched on the thread that runs transactions
        self._once = False  # inline writes: one try for the write lock, then _LockBusy
        self._inline = inline
        self.lock_wait_s = LOCK_WAIT_S  # how long a write waits for SQLite's write lock

    async def run(self, fn: Callable[[Connection], T]) -> T:
        if self._inline:
            return await self._inline_transaction(fn, False)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn, False)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        if self._inline:
            return await self._inline_transaction(fn, True)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn, True)

    async def _inline_transaction(self, fn: Callable[[Connection], T], immediate: bool) -> T:
        """A transaction on the loop's thread. It first gives the loop's other tasks a turn
        (a run of transactions, such as a scheduler sweep, would otherwise hold the loop for
        as long as it lasts). While another process holds the write lock it never waits
        inside SQLite: a write tries ``BEGIN IMMEDIATE`` once, a deferred transaction that
        writes fails at once (busy timeout 0) and rolls back; either runs again after an
        asynchronous pause, for at most ``lock_wait_s``."""
        await asyncio.sleep(0)
        deadline = time.monotonic() + self.lock_wait_s
        delay = _RETRY_FIRST_S
        while True:
            self._once = immediate
            try:
                return self._transaction(fn, immediate)
            except _LockBusy as exc:
                if time.monotonic() > deadline:
                    raise DBAPIOperationalError("BEGIN IMMEDIATE", None, exc.__cause__ or exc) from exc
            except DBAPIOperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                    raise
            finally:
                self._once = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    def _begin(self, conn: Connection) -> None:
        if not self._immediate:
            conn.exec_driver_sql("BEGIN")
            return
        driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        driver.execute("PRAGMA busy_timeout = 0")
        try:
            if self._once:
                _begin_once(driver)
            else:
                _begin_promptly(driver, self.lock_wait_s)
        except sqlite3.OperationalError as exc:
            # Raised from an event hook SQLAlchemy does not wrap: wrap it as the driver's
            # BEGIN would have been, so callers that wait for the database (catching
            # sqlalchemy.exc.OperationalError) keep waiting instead of failing the work.
            raise DBAPIOperationalError("BEGIN IMMEDIATE", None, exc) from exc
        finally:
            driver.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def _transaction(self, fn: Callable[[Connection], T], immediate: bool) -> T:
        self._immediate = immediate
        try:
            with self._engine.begin() as conn:
                return fn(conn)
        finally:
            self._immediate = False

    async def run_dbapi(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the driver connection in one ``BEGIN IMMEDIATE``
        transaction: the hot path's statements without SQLAlchemy's per-transaction cost
        (measured: about 0.3 ms of interpreter time per commit).

        It runs on the event loop's thread when SQLite's write lock is free at once: a small
        transaction costs less than handing it to the thread and its result back (measured
        in ``bench/ingest``: 3,380-3,740 msg/s through the thread, 5,730-5,860 inline, ACK
        p99 lower too). While another process holds the lock, or a transaction of this
        connection is already on the thread, it goes to the thread, which waits for the lock
        (:func:`_begin_promptly`), so the loop never waits inside SQLite."""
        if not self._raw_on_thread:
            try:
                return self._dbapi_transaction(fn, wait=False)
            except _LockBusy:
                pass
        loop = asyncio.get_running_loop()
        self._raw_on_thread += 1
        try:
            return await loop.run_in_executor(self._executor, self._dbapi_transaction, fn)
        finally:
            self._raw_on_thread -= 1

    def _dbapi_transaction(self, fn: Callable[[sqlite3.Connection], T], wait: bool = True) -> T:
        if self._raw is None:
            self._raw = self._engine.raw_connection()
            # This connection waits for the write lock itself (see _begin_promptly). It
            # keeps SQLite's automatic checkpoints: a checkpointer on another connection
            # never finishes while this one writes without pause, and the log then grows
            # without bound (measured: 4 GB in a soak).
            self._raw.driver_connection.execute("PRAGMA busy_timeout = 0")
        conn: sqlite3.Connection = self._raw.driver_connection
        if wait:
            _begin_promptly(conn)
        else:
            _begin_once(conn)
        try:
            result = fn(conn)
            # A failed COMMIT (a deferred constraint, a full disk) leaves the transaction
            # open, holding the write lock for every process until this one ends: roll back.
            conn.commit()
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return result

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self._engine.dispose()


class AsyncEngineDatabase:
    """PostgreSQL (or any async driver) through ``AsyncConnection.run_sync``."""

    def __init__(self, url: str) -> None:
        self.url = url  # as given (the listener's hot path opens a driver connection of its own)
        self._engine = create_engine(url)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self.run(fn)  # row locks (SELECT ... FOR UPDATE) serialise writers

    async def dispose(self) -> None:
        await self._engine.dispose()


def open_database(url: str, sqlite_synchronous: str = "NORMAL", inline: bool = False) -> Database:
    """The right :class:`Database` for a URL (``sqlite:///...`` or ``postgresql://...``).

    ``inline``: SQLite transactions on the event loop's thread (see
    :class:`ThreadedSqliteDatabase`); PostgreSQL's driver is asynchronous anyway.
    """
    if is_sqlite(url):
        return ThreadedSqliteDatabase(url, sqlite_synchronous, inline)
    return AsyncEngineDatabase(async_url(url))


async def ping(db: Database) -> None:
    """Raise if the database does not answer."""
    await db.run(lambda conn: conn.execute(text("SELECT 1")).scalar_one())


# PostgreSQL's codes for a transaction that lost to another and can simply run again.
_RETRYABLE_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure


def is_transient(exc: BaseException) -> bool:
    """The database could not run the transaction now, and running it again later is right:
    unreachable or locked (``OperationalError``), or on PostgreSQL a deadlock or
    serialization failure against another worker's transaction (SQLAlchemy's asyncpg adapter
    raises those as a plain ``DBAPIError``)."""
    if isinstance(exc, DBAPIOperationalError):
        return True
    return isinstance(exc, DBAPIError) and \
        getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


async def write_retrying(db: Database, fn: Callable[[Connection], T], log: Any, event: str) -> T:
    """``db.write(fn)``, run again while the failure is transient (:func:`is_transient`):
    after 1 s while the database is unavailable, at once after losing a deadlock. Logs
    ``event`` with the error's type and the time waited so far."""
    started = time.monotonic()
    while True:
        try:
            return await db.write(fn)
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            log.warning(event, error=type(exc.orig).__name__,
                        waited=round(time.monotonic() - started, 1))
            await asyncio.sleep(1.0 if isinstance(exc, DBAPIOperationalError) else 0.01)


async def write_for_request(db: Database, fn: Callable[[Connection], T],
                            attempts: int = 5) -> T:
    """``db.write(fn)`` for a person's request: run again at once after losing a deadlock or
    a serialization failure to a worker's transaction (PostgreSQL), up to ``attempts`` times;
    any other failure, an unavailable database included, is raised for the caller to answer
    (a person should not wait for the database the way a worker does).

    Raises:
        DBAPIError: the database failed, or it kept losing to other transactions.
    """
    for attempt in range(attempts):
        try:
            return await db.write(fn)
        except DBAPIError as exc:
            lost = getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES
            if not lost or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


LOCK_WAIT_S = 30.0  # as long as the other connections' busy timeout
_RETRY_FIRST_S, _RETRY_MAX_S = 0.0002, 0.002


def _begin_promptly(conn: sqlite3.Connection, wait_s: float = LOCK_WAIT_S) -> None:
    """``BEGIN IMMEDIATE``, retried every 0.2 to 2 ms while another process holds the write
    lock. SQLite's own busy handler sleeps up to 100 ms between tries, so a process that
    commits back to back (the worker) kept the listener waiting for hundreds of
    milliseconds before its ACKs (measured: ACK p99 440 ms in ``bench/e2e``); retried
    promptly, the listener gets the lock as soon as it is free.

    Raises:
        sqlite3.OperationalError: the lock stayed taken for ``wait_s`` seconds, or another
            error.
    """
    deadline = time.monotonic() + wait_s
    delay = _RETRY_FIRST_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, _RETRY_MAX_S)


class _LockBusy(Exception):
    """Another process holds SQLite's write lock (an inline write tries again later)."""


def _begin_once(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise _LockBusy() from exc
        raise


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def apply(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return apply
