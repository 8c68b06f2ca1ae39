"""Dialect-aware INSERT ... ON CONFLICT, for the two databases the service runs on."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def dialect_insert(conn: Connection, table: Table) -> Any:
    """``INSERT`` with ``on_conflict_do_*`` for the connection's database.

    Raises:
        ValueError: a database other than SQLite or PostgreSQL.
    """
    return _insert(conn.dialect.name, table)


def _insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"upsert on {dialect}: transcare runs on SQLite or PostgreSQL")


def insert_new(conn: Connection, table: Table, keys: Sequence[str],
               returning: Sequence[str] = ()) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` (``RETURNING`` the named columns of the
    rows that were new), built once per shape: execute it with the rows as parameters."""
    return _insert_new(conn.dialect.name, table, tuple(keys), tuple(returning))


@lru_cache(maxsize=64)
def _insert_new(dialect: str, table: Table, keys: tuple[str, ...], returning: tuple[str, ...]) -> Any:
    stmt = _insert(dialect, table).on_conflict_do_nothing(index_elements=list(keys))
    return stmt.returning(*(table.c[name] for name in returning)) if returning else stmt


def upsert(conn: Connection, table: Table, keys: Sequence[str], rows: Sequence[dict[str, Any]],
           keep: Collection[str] = ()) -> None:
    """Insert ``rows``, or update them where ``keys`` match; columns in ``keep`` (and columns
    the rows do not carry) keep their stored value on update.

    Raises:
        ValueError: a database other than SQLite or PostgreSQL.
    """
    if not rows:
        return
    statement = _upsert_statement(conn.dialect.name, table, tuple(rows[0]), tuple(keys),
                                  frozenset(keep))
    conn.execute(statement, list(rows))


@lru_cache(maxsize=256)
def _upsert_statement(dialect: str, table: Table, columns: tuple[str, ...], keys: tuple[str, ...],
                      keep: frozenset[str]) -> Any:
    """The statement for one shape of upsert, built once: ``excluded`` copies every column
    of the table, which cost more than executing the statement (measured on the hot path)."""
    stmt = _insert(dialect, table)
    updates = {name: stmt.excluded[name] for name in columns if name not in keys and name not in keep}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=updates)
