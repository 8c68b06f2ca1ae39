"""SQLite write transactions take the write lock by prompt retries."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from transcare.db.database import ThreadedSqliteDatabase, _begin_promptly


def _connect(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


async def _table_and_lock_holder(path: Path,
                                 inline: bool) -> tuple[ThreadedSqliteDatabase, sqlite3.Connection]:
    """A database at ``path`` with a table ``t``, and another connection holding its write
    lock (``BEGIN IMMEDIATE``); the caller disposes of the database."""
    db = ThreadedSqliteDatabase(f"sqlite:///{path}", inline=inline)
    await db.write(lambda c: c.execute(text("CREATE TABLE t (n INTEGER)")))
    holder = _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    return db, holder


class Ticker:
    """Another task on the event loop, counting the turns it gets."""

    def __init__(self, every_s: float) -> None:
        import asyncio

        self.ticks = 0
        self._every = every_s
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import asyncio

        while True:
            self.ticks += 1
            await asyncio.sleep(self._every)

    def stop(self) -> None:
        self._task.cancel()


def test_begin_takes_the_lock_once_the_other_process_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    holder = _connect(path)
    holder.execute("CREATE TABLE t (n INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = _connect(path)
    waiter.execute("PRAGMA busy_timeout = 0")
    released = threading.Event()

    def release_later() -> None:
        released.wait(5)
        holder.execute("INSERT INTO t VALUES (1)")
        holder.commit()

    threading.Timer(0.05, released.set).start()
    thread = threading.Thread(target=release_later)
    thread.start()
    _begin_promptly(waiter)  # waits for the holder's commit, then holds the lock itself
    assert released.is_set()
    waiter.execute("INSERT INTO t VALUES (2)")
    waiter.commit()
    thread.join()
    assert [n for (n,) in waiter.execute("SELECT n FROM t ORDER BY n")] == [1, 2]


def test_begin_gives_up_after_the_wait_with_the_drivers_error(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    holder = _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    waiter = _connect(path)
    waiter.execute("PRAGMA busy_timeout = 0")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _begin_promptly(waiter, wait_s=0.05)
    holder.rollback()


@pytest.mark.parametrize("inline", [False, True], ids=["threaded", "inline"])
async def test_two_processes_writers_take_turns_and_keep_their_busy_timeout(
        tmp_path: Path, inline: bool) -> None:
    """Two databases on one file (as the listener and the worker are): a write waits for the
    other's transaction, then commits; afterwards the connection's own busy timeout is back."""
    import asyncio

    from sqlalchemy import text

    from transcare.db.database import LOCK_WAIT_S, ThreadedSqliteDatabase

    url = f"sqlite:///{tmp_path / 'two.db'}"
    first, second = ThreadedSqliteDatabase(url), ThreadedSqliteDatabase(url, inline=inline)
    try:
        await first.write(lambda c: c.execute(text("CREATE TABLE t (n INTEGER)")))

        def slow_insert(conn: object, n: int) -> None:
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})  # type: ignore[attr-defined]
            time.sleep(0.05)  # hold the write lock a while

        await asyncio.gather(first.write(lambda c: slow_insert(c, 1)),
                             second.write(lambda c: slow_insert(c, 2)))
        rows = await second.run(lambda c: sorted(c.execute(text("SELECT n FROM t")).scalars()))
        assert rows == [1, 2]
        timeout = await second.write(
            lambda c: c.execute(text("PRAGMA busy_timeout")).scalar_one())
        # Inline, nothing may wait in SQLite's busy handler (the loop would stop).
        assert timeout == (0 if inline else int(LOCK_WAIT_S * 1000))
    finally:
        await first.dispose()
        await second.dispose()


@pytest.mark.parametrize("inline", [False, True], ids=["threaded", "inline"])
async def test_a_write_that_cannot_get_the_lock_raises_sqlalchemys_operational_error(
        tmp_path: Path, inline: bool) -> None:
    """Regression: the lock wait runs in SQLAlchemy's begin hook, whose driver errors
    SQLAlchemy does not wrap; the worker's retry loops catch
    sqlalchemy.exc.OperationalError, so a plain sqlite3 error dropped the work instead of
    waiting for the database. The same when the wait is the inline one."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from transcare.db.database import LOCK_WAIT_S

    db, holder = await _table_and_lock_holder(tmp_path / "locked.db", inline)
    try:
        db.lock_wait_s = 0.05
        with pytest.raises(OperationalError, match="locked"):
            await db.write(lambda c: c.execute(text("INSERT INTO t VALUES (1)")))
        holder.rollback()
        db.lock_wait_s = LOCK_WAIT_S
        await db.write(lambda c: c.execute(text("INSERT INTO t VALUES (2)")))  # fine again
        assert await db.run(lambda c: list(c.execute(text("SELECT n FROM t")).scalars())) == [2]
    finally:
        await db.dispose()


@pytest.mark.parametrize("method", ["write", "run"])
async def test_an_inline_transaction_waits_for_the_lock_without_stopping_the_loop(
        tmp_path: Path, method: str) -> None:
    """The worker's database runs transactions on the loop's thread; while another process
    holds the write lock the loop goes on (a blocked loop misses heartbeats and fetches).
    ``run()`` (a deferred transaction) may write too (``transcare replay``'s requeue, for
    one): it must not sit in SQLite's busy handler either, but fail at once, roll back and
    run again once the lock is free."""
    import asyncio

    from sqlalchemy import text


    db, holder = await _table_and_lock_holder(tmp_path / "inline.db", inline=True)
    try:
        holder.execute("INSERT INTO t VALUES (1)")

        def insert(conn: object) -> int:
            conn.execute(text("INSERT INTO t VALUES (2)"))  # type: ignore[attr-defined]
            return threading.get_ident()

        ticker = Ticker(every_s=0.005)
        asyncio.get_running_loop().call_later(0.15, holder.commit)
        ran_on = await getattr(db, method)(insert)
        ticker.stop()
        assert ran_on == threading.get_ident()  # on the loop's thread
        assert ticker.ticks >= 10  # the loop kept running while the transaction waited
        assert await db.run(lambda c: sorted(c.execute(text("SELECT n FROM t")).scalars())) == [1, 2]
    finally:
        await db.dispose()


async def test_inline_transactions_give_the_loop_a_turn_between_them(tmp_path: Path) -> None:
    """A run of inline transactions (a scheduler sweep of 50, a batch's chunks) lets the
    loop's other tasks (consumers, heartbeats, the outbox) run between them; before, a sweep
    held the worker's loop for seconds."""
    import asyncio

    from sqlalchemy import text

    from transcare.db.database import ThreadedSqliteDatabase

    db = ThreadedSqliteDatabase(f"sqlite:///{tmp_path / 'turns.db'}", inline=True)
    try:
        await db.write(lambda c: c.execute(text("CREATE TABLE t (n INTEGER)")))
        other_task = Ticker(every_s=0)
        await asyncio.sleep(0)
        started = other_task.ticks
        for n in range(5):
            await db.write(lambda c, n=n: c.execute(text("INSERT INTO t VALUES (:n)"), {"n": n}))
            await db.run(lambda c: c.execute(text("SELECT count(*) FROM t")).scalar_one())
        other_task.stop()
        assert other_task.ticks - started >= 9  # a turn before each of the ten transactions
    finally:
        await db.dispose()


async def test_a_driver_transaction_runs_on_the_loop_when_the_lock_is_free(tmp_path: Path) -> None:
    """The listener's hot path (``run_dbapi``: store, mark published; the normaliser's
    outcomes) commits on the loop's own thread when nobody holds the write lock: handing each
    small transaction to the thread and back cost a third of the listener's throughput."""
    db, holder = await _table_and_lock_holder(tmp_path / "free.db", inline=False)
    holder.rollback()  # the lock is free
    try:
        def insert(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (1)")
            return threading.get_ident()

        assert await db.run_dbapi(insert) == threading.get_ident()
        assert [n for (n,) in _connect(tmp_path / "free.db").execute("SELECT n FROM t")] == [1]
    finally:
        await db.dispose()


async def test_a_driver_transaction_waits_for_the_lock_on_the_thread(tmp_path: Path) -> None:
    """While another process holds the write lock, the transaction goes to the database's
    thread, which waits for the lock: the loop keeps running, the work is not lost, and a
    second transaction meanwhile queues behind the first on the thread (one connection is
    never used by two threads at once) and commits after it."""
    import asyncio

    db, holder = await _table_and_lock_holder(tmp_path / "busy.db", inline=False)
    try:
        def insert(n: int) -> Callable[[sqlite3.Connection], int]:
            def run(conn: sqlite3.Connection) -> int:
                conn.execute("INSERT INTO t VALUES (?)", (n,))
                return threading.get_ident()
            return run

        ticker = Ticker(every_s=0.005)
        asyncio.get_running_loop().call_later(0.15, holder.commit)
        first = asyncio.ensure_future(db.run_dbapi(insert(1)))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(db.run_dbapi(insert(2)))  # the lock is still held
        threads = await asyncio.gather(first, second)
        ticker.stop()
        assert all(t != threading.get_ident() for t in threads)  # both on the thread
        assert ticker.ticks >= 10  # the loop kept running while they waited
        rows = [n for (n,) in _connect(tmp_path / "busy.db").execute("SELECT n FROM t")]
        assert rows == [1, 2]
        assert await db.run_dbapi(insert(3)) == threading.get_ident()  # free again: inline
    finally:
        await db.dispose()


async def test_a_failing_driver_transaction_rolls_back_on_the_loop(tmp_path: Path) -> None:
    db, holder = await _table_and_lock_holder(tmp_path / "fail.db", inline=False)
    holder.rollback()
    try:
        def half_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (1)")
            raise ValueError("bad row")

        with pytest.raises(ValueError, match="bad row"):
            await db.run_dbapi(half_then_fail)
        await db.run_dbapi(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
        assert [n for (n,) in _connect(tmp_path / "fail.db").execute("SELECT n FROM t")] == [2]
    finally:
        await db.dispose()


async def test_a_driver_transaction_whose_commit_fails_releases_the_write_lock(
        tmp_path: Path) -> None:
    """Regression: a COMMIT that fails (here a deferred foreign key; on a full disk, an I/O
    error) left the driver connection inside its transaction, holding SQLite's write lock:
    every other process (the normaliser, the workers) and every later batch of this one
    failed until the listener restarted."""
    path = tmp_path / "commit.db"
    db = ThreadedSqliteDatabase(f"sqlite:///{path}")
    try:
        await db.write(lambda c: c.execute(text(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY)")))
        await db.write(lambda c: c.execute(text(
            "CREATE TABLE child (parent INTEGER REFERENCES parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)")))

        with pytest.raises(sqlite3.IntegrityError):
            await db.run_dbapi(lambda conn: conn.execute("INSERT INTO child VALUES (7)"))
        other = _connect(path)
        other.execute("PRAGMA busy_timeout = 0")
        other.execute("BEGIN IMMEDIATE")  # the lock is free again
        other.rollback()
        await db.run_dbapi(lambda conn: conn.execute("INSERT INTO parent VALUES (1)"))
        assert [n for (n,) in other.execute("SELECT id FROM parent")] == [1]
        assert [n for (n,) in other.execute("SELECT count(*) FROM child")] == [0]
    finally:
        await db.dispose()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
async def test_every_sqlite_connection_checkpoints_every_10000_pages(
        tmp_path: Path, inline: bool) -> None:
    """The worker's, the listener's and the web's connections (SQLAlchemy's, the raw driver
    connection of the listener's hot path, and the async engine's) all leave the log to grow
    to SQLITE_CHECKPOINT_PAGES before a checkpoint, and keep WAL mode."""
    from transcare.db.engine import SQLITE_CHECKPOINT_PAGES, create_engine

    def pragmas(c: Any) -> tuple[Any, ...]:
        return (c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar(),
                c.exec_driver_sql("PRAGMA journal_mode").scalar())

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    db = ThreadedSqliteDatabase(url, inline=inline)
    try:
        assert await db.run(pragmas) == (SQLITE_CHECKPOINT_PAGES, "wal")
        assert await db.run_dbapi(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) \
            == SQLITE_CHECKPOINT_PAGES
    finally:
        await db.dispose()
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(pragmas) == (SQLITE_CHECKPOINT_PAGES, "wal")
    finally:
        await engine.dispose()
