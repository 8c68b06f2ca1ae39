"""Planner statistics after a bulk load.

PostgreSQL plans from statistics that ``ANALYZE`` gathers; autovacuum gathers them once enough
of a table changed, at its next round (a minute by default; never where it is turned off).
Until then the planner knows only a table's size on disk, and a statement prepared before the
load keeps a plan made for the table as it was: a roster import of 2,000 members left the
worker reading ``members`` whole for every batch's lookup of a few ids (0.7 ms against 0.05 for
the index; ``docs/performance.md``). A bulk load therefore analyses the tables it filled, which
also makes every cached plan on them be made again. SQLite plans without them.
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.engine import Connection


def refresh_statistics(conn: Connection, *tables: Table) -> None:
    """``ANALYZE`` ``tables`` on PostgreSQL (in the caller's transaction: its own rows count)."""
    if conn.dialect.name == "postgresql" and tables:
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"ANALYZE {', '.join(quote(t.name) for t in tables)}")
