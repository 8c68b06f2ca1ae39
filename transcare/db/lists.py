"""Membership conditions (``column IN`` a list of values) in the form each database caches.

SQLAlchemy renders ``column.in_(values)`` with one bound parameter a value, so every length of
list is another statement. SQLite compiles statements in-process and keeps ``IN``. On
PostgreSQL each new text is prepared anew (a round trip, then a parse and a plan on the server)
and pushes the statements that do repeat out of the driver's cache: in bench/e2e about half of
the worker's statements were prepared for one use. There the condition is ``column = ANY($1)``
with the whole list as one array parameter (a pair of columns: ``IN`` the rows of ``unnest``
of two arrays), one statement whatever the length.

``keys_present`` asks which of many keys a table holds, in a form whose plan stays right as
the table grows (see there).

``one_of`` and ``pair_in`` bind the values where the statement is built; ``one_of_param`` and
``pair_in_param`` leave a named parameter for a statement built once a dialect (pass the list
under ``name``; a pair's parameters come from :func:`pair_params`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    any_,
    bindparam,
    func,
    literal_column,
    select,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY

POSTGRESQL = "postgresql"


def _array_param(name: str | None, column: ColumnElement[Any], values: Any = None) -> Any:
    # Strings as an array of unbounded VARCHAR: a cast to the column's VARCHAR(n)[] would cut
    # a longer value to n characters, and it would then match the row holding its prefix.
    element = String() if isinstance(column.type, String) else column.type
    return bindparam(name, values, type_=ARRAY(element))


def _one_of(dialect: str, column: ColumnElement[Any], name: str | None,
            values: list[Any] | None) -> ColumnElement[bool]:
    if dialect == POSTGRESQL:
        return column == any_(_array_param(name, column, values))
    return column.in_(bindparam(name, values, expanding=True))


def _pair_in(dialect: str, first: ColumnElement[Any], second: ColumnElement[Any],
             name: str | None, pairs: list[tuple[Any, Any]] | None) -> ColumnElement[bool]:
    if dialect == POSTGRESQL:
        firsts, seconds = (None, None) if pairs is None else (
            [a for a, _ in pairs], [b for _, b in pairs])
        rows = func.unnest(_array_param(name and f"{name}_first", first, firsts),
                           _array_param(name and f"{name}_second", second, seconds)
                           ).table_valued("first", "second").render_derived()
        return tuple_(first, second).in_(select(rows.c.first, rows.c.second))
    return tuple_(first, second).in_(bindparam(name, pairs, expanding=True))


def one_of(conn: Connection, column: ColumnElement[Any], values: Iterable[Any]
           ) -> ColumnElement[bool]:
    """``column`` is one of ``values``."""
    return _one_of(conn.dialect.name, column, None, list(values))


def one_of_param(dialect: str, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column`` is one of the list passed as parameter ``name``."""
    return _one_of(dialect, column, name, None)


def pair_in(conn: Connection, first: ColumnElement[Any], second: ColumnElement[Any],
            pairs: Iterable[tuple[Any, Any]]) -> ColumnElement[bool]:
    """``(first, second)`` is one of ``pairs``."""
    return _pair_in(conn.dialect.name, first, second, None, list(pairs))


def pair_in_param(dialect: str, first: ColumnElement[Any], second: ColumnElement[Any],
                  name: str) -> ColumnElement[bool]:
    """``(first, second)`` is one of the pairs passed as ``pair_params(dialect, name, pairs)``."""
    return _pair_in(dialect, first, second, name, None)


def pair_params(dialect: str, name: str, pairs: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    """The parameters of :func:`pair_in_param` for ``pairs``."""
    if dialect == POSTGRESQL:
        return {f"{name}_first": [a for a, _ in pairs], f"{name}_second": [b for _, b in pairs]}
    return {name: list(pairs)}


def keys_present(conn: Connection, column: ColumnElement[Any], values: Iterable[Any],
                 *conditions: ColumnElement[bool]) -> set[Any]:
    """Which of ``values`` some row meeting ``conditions`` holds in ``column`` (an indexed
    column: a key, an id).

    On PostgreSQL the index is probed once a value (``unnest`` of the values, each joined
    ``LATERAL`` to its own ``LIMIT 1`` lookup), a plan that is right whatever the table's size.
    ``column = ANY($1)`` is not: the server plans a prepared statement afresh for its first
    five executions, then keeps a generic plan until the table's statistics change. The
    worker's lookups in ``processed_events`` and ``planned_events`` start on empty tables, so
    the plan kept read the whole table, and autovacuum renews statistics only after a while
    (never where it is turned off): 300 keys against 30,000 rows took 103 ms a call instead
    of 0.8 (docs/performance.md).
    """
    wanted = list(dict.fromkeys(values))
    if not wanted:
        return set()
    if conn.dialect.name == POSTGRESQL:
        keys = func.unnest(_array_param(None, column, wanted)).table_valued("value").render_derived()
        one: ColumnElement[Any] = literal_column("1")  # in the text: planned knowing it
        hit = select(one).where(column == keys.c.value, *conditions).limit(one).lateral()
        return set(conn.execute(select(keys.c.value).select_from(keys.join(hit, true())))
                   .scalars())
    return set(conn.execute(select(column).where(column.in_(wanted), *conditions)).scalars())
