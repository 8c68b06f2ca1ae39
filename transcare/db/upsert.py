"""Writing many rows at once: plain inserts, inserts of the new rows only, and upserts, for the
two databases the service runs on.

SQLite runs one prepared statement for every row (``executemany``): it compiles in-process, so
a row costs little. On PostgreSQL ``executemany`` sends and executes each row on its own (with
SQLAlchemy's per-row parameter work in the worker and an executor start and a plan in the
server each), which made inserts the largest part of the worker's statements. There a batch is
one statement whatever its size::

    INSERT INTO t (a, b, c) SELECT a, b, c::json
    FROM unnest($1::text[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS u(a, b, c, n)
    ORDER BY n [ON CONFLICT (a) DO NOTHING | DO UPDATE SET b = excluded.b, ...]

one array parameter a column, the rows kept in their order (serial ids follow it). Values are
converted as SQLAlchemy's column types would (aware datetimes to UTC, naive ones refused; JSON
through the engine's serializer); strings go as unbounded ``text``, so a value too long for
its column is refused by the insert, never cut to fit. Columns the rows do not carry get their
column's default, as SQLAlchemy gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine

from transcare.db.engine import json_dumps

Rows = Sequence[Mapping[str, Any]]
_PG = asyncpg.dialect()  # type: ignore[no-untyped-call]  # the driver the service uses


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


def insert_all(conn: Connection, table: Table, rows: Rows) -> None:
    """Insert ``rows`` (each with the same columns); a key already stored fails the statement."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _run(conn, _pg_statement(table, tuple(rows[0]), (), None, frozenset(), ()), rows)
        return
    conn.execute(_insert(conn.dialect.name, table), list(rows))


def insert_new(conn: Connection, table: Table, keys: Sequence[str], rows: Rows,
               returning: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """Insert the rows whose ``keys`` are not stored yet (of two rows with one key in ``rows``,
    the first); returns the ``returning`` columns of the rows inserted, as the driver gives
    them on PostgreSQL (no result processing of the column types: return plain columns)."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        statement = _pg_statement(table, tuple(rows[0]), tuple(keys), "nothing", frozenset(),
                                  tuple(returning))
        return _run(conn, statement, _first_of_each_key(rows, keys))
    query = _insert_new(conn.dialect.name, table, tuple(keys), tuple(returning))
    result = conn.execute(query, list(rows))
    return [tuple(r) for r in result.all()] if returning else []


def upsert(conn: Connection, table: Table, keys: Sequence[str], rows: Rows,
           keep: Collection[str] = ()) -> None:
    """Insert ``rows``, or update them where ``keys`` match; columns in ``keep`` (and columns
    the rows do not carry) keep their stored value on update. Two rows with one key in
    ``rows`` apply in turn, as two statements would.

    Raises:
        ValueError: a database other than SQLite or PostgreSQL.
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        statement = _pg_statement(table, tuple(rows[0]), tuple(keys), "update", frozenset(keep), ())
        _run(conn, statement, _merged_by_key(rows, keys, keep))
        return
    statement = _upsert_statement(conn.dialect.name, table, tuple(rows[0]), tuple(keys),
                                  frozenset(keep))
    conn.execute(statement, list(rows))


@lru_cache(maxsize=64)
def _insert_new(dialect: str, table: Table, keys: tuple[str, ...], returning: tuple[str, ...]) -> Any:
    stmt = _insert(dialect, table).on_conflict_do_nothing(index_elements=list(keys))
    return stmt.returning(*(table.c[name] for name in returning)) if returning else stmt


@lru_cache(maxsize=256)
def _upsert_statement(dialect: str, table: Table, columns: tuple[str, ...], keys: tuple[str, ...],
                      keep: frozenset[str]) -> Any:
    """The statement for one shape of upsert, built once: ``excluded`` copies every column
    of the table, which cost more than executing the statement (measured on the hot path)."""
    stmt = _insert(dialect, table)
    updates = {name: stmt.excluded[name] for name in columns if name not in keys and name not in keep}
    if not updates:  # every column kept: nothing to update
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=updates)


def _first_of_each_key(rows: Rows, keys: Sequence[str]) -> Rows:
    seen: set[tuple[Any, ...]] = set()
    first = []
    for row in rows:
        key = tuple(row[k] for k in keys)
        if None in key:  # NULL equals nothing: the database decides, as for distinct keys
            first.append(row)
        elif key not in seen:
            seen.add(key)
            first.append(row)
    return first


def _merged_by_key(rows: Rows, keys: Sequence[str], keep: Collection[str]) -> Rows:
    """One row a key, as the rows would leave it one after the other: PostgreSQL refuses to
    update one row twice in a statement. A later row's values win, except in ``keep``."""
    merged: dict[Any, dict[str, Any]] = {}
    for n, row in enumerate(rows):
        key: Any = tuple(row[k] for k in keys)
        if None in key:  # NULL equals nothing: a row of its own
            key = n
        if key in merged:
            merged[key].update((k, v) for k, v in row.items() if k not in keep)
        else:
            merged[key] = dict(row)
    return list(merged.values()) if len(merged) < len(rows) else rows


class _PgStatement(NamedTuple):
    table: str
    sql: str
    columns: tuple[str, ...]  # the rows' keys, in parameter order
    defaults: tuple[tuple[str, Any], ...]  # columns the rows lack, with their default
    converters: tuple[Callable[[Any], Any] | None, ...]  # one a parameter
    returning: bool


def _run(conn: Connection, statement: _PgStatement, rows: Rows) -> list[tuple[Any, ...]]:
    names = statement.columns
    try:
        arrays: list[list[Any]] = [[row[name] for row in rows] for name in names]
    except KeyError as exc:  # as SQLAlchemy's executemany: every row carries the first's columns
        raise ValueError(f"{statement.table}: a row without column {exc.args[0]!r}") from None
    arrays += [[value] * len(rows) for _, value in statement.defaults]
    params = tuple(array if convert is None else [convert(v) for v in array]
                   for array, convert in zip(arrays, statement.converters, strict=True))
    result = conn.exec_driver_sql(statement.sql, params)
    return [tuple(r) for r in result.all()] if statement.returning else []


@lru_cache(maxsize=256)
def _pg_statement(table: Table, columns: tuple[str, ...], keys: tuple[str, ...],
                  conflict: str | None, keep: frozenset[str],
                  returning: tuple[str, ...]) -> _PgStatement:
    unknown = [name for name in columns if name not in table.c]
    if unknown:
        raise ValueError(f"{table.name}: no column {', '.join(unknown)}")
    defaults = []
    for column in table.c:
        if column.name in columns or column.default is None:
            continue
        if not column.default.is_scalar:
            raise ValueError(f"{table.name}.{column.name}: pass a value (its default is not a constant)")
        defaults.append((column.name, column.default.arg))  # type: ignore[attr-defined]
    names = columns + tuple(name for name, _ in defaults)
    kinds = [_pg_kind(table.c[name].type, f"{table.name}.{name}") for name in names]
    preparer = _PG.identifier_preparer

    def quote(key: str) -> str:  # a column by its key, as rows name it
        return preparer.quote(table.c[key].name)

    targets = ", ".join(quote(name) for name in names)
    aliases = ", ".join(f"c{n}" for n in range(len(names)))
    selected = ", ".join(f"c{n}{kind.cast}" for n, kind in enumerate(kinds))
    arrays = ", ".join(f"${n}::{kind.array}[]" for n, kind in enumerate(kinds, 1))
    sql = (f"INSERT INTO {preparer.format_table(table)} ({targets}) SELECT {selected} FROM unnest({arrays}) "
           f"WITH ORDINALITY AS u({aliases}, n) ORDER BY n")
    if conflict == "nothing":
        sql += f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO NOTHING"
    elif conflict == "update":
        updates = [name for name in columns if name not in keys and name not in keep]
        action = (f"DO UPDATE SET {', '.join(f'{quote(u)} = excluded.{quote(u)}' for u in updates)}"
                  if updates else "DO NOTHING")
        sql += f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) {action}"
    if returning:
        sql += f" RETURNING {', '.join(quote(name) for name in returning)}"
    return _PgStatement(table.name, sql, columns, tuple(defaults), tuple(k.convert for k in kinds),
                        bool(returning))


class _Kind(NamedTuple):
    array: str  # the array parameter's element type
    cast: str  # the cast from that type to the column's, if any
    convert: Callable[[Any], Any] | None  # a value to the parameter's element


def _pg_kind(type_: TypeEngine[Any], where: str) -> _Kind:
    type_ = type_._variant_mapping.get(_PG.name, type_)  # with_variant(..., "postgresql")
    if isinstance(type_, TypeDecorator):
        inner = _pg_kind(type_.impl_instance, where)
        process = type_.process_bind_param
        def convert(value: Any) -> Any:
            value = process(value, _PG)
            return value if inner.convert is None else inner.convert(value)

        return inner._replace(convert=convert)
    if isinstance(type_, JSON):
        none_as_null = type_.none_as_null

        def to_json(value: Any) -> str | None:
            return None if value is None and none_as_null else json_dumps(value)

        return _Kind("text", "::jsonb" if isinstance(type_, postgresql.JSONB) else "::json", to_json)
    if isinstance(type_, Enum):  # SQLAlchemy stores a member's name; not needed so far
        raise TypeError(f"{where}: no bulk form for an Enum column")
    if isinstance(type_, String):  # also Text
        return _Kind("text", "", None)
    if isinstance(type_, Boolean):
        return _Kind("boolean", "", _strict_bool)
    if isinstance(type_, (BigInteger, Integer)):
        return _Kind("bigint", "", None)
    if isinstance(type_, Float):
        return _Kind("float8", "", None)
    if isinstance(type_, DateTime):
        return _Kind("timestamptz" if type_.timezone else "timestamp", "", None)
    if isinstance(type_, Date):
        return _Kind("date", "", None)
    if isinstance(type_, LargeBinary):
        return _Kind("bytea", "", None)
    raise TypeError(f"{where}: no bulk form for column type {type_!r}")


def _strict_bool(value: Any) -> bool | None:
    """As SQLAlchemy's Boolean takes them: None, True, False, 1 and 0."""
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise TypeError(f"not a boolean value: {value!r}")
