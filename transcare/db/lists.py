"""Membership conditions (``column IN`` a list of values) in the form each database caches.

SQLAlchemy renders ``column.in_(values)`` with one bound parameter a value, so every length of
list is another statement. SQLite compiles statements in-process and keeps ``IN``. On
PostgreSQL each new text is prepared anew (a round trip, then a parse and a plan on the server)
and pushes the statements that do repeat out of the driver's cache: in bench/e2e about half of
the worker's statements were prepared for one use. There the condition is ``column = ANY($1)``
with the whole list as one array parameter (a pair of columns: ``IN`` the rows of ``unnest``
of two arrays), one statement whatever the length.

``one_of`` and ``pair_in`` bind the values where the statement is built; ``one_of_param`` and
``pair_in_param`` leave a named parameter for a statement built once a dialect (pass the list
under ``name``; a pair's parameters come from :func:`pair_params`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, any_, bindparam, func, select, tuple_
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
