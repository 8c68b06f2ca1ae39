"""The listener's write transactions wait for SQLite's write lock by retrying promptly."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from transcare.db.database import _begin_promptly


def _connect(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


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
