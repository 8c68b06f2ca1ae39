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

import structlog
from sqlalchemy import Table, text
from sqlalchemy.engine import Connection

from transcare.db.database import AsyncEngineDatabase, Database

log = structlog.get_logger("transcare.db.statistics")

LOCK_TIMEOUT = "2s"  # ANALYZE waits for a running VACUUM of the table: give up instead


async def refresh_statistics(db: Database, changed: int, *tables: Table) -> None:
    """``ANALYZE`` ``tables`` on PostgreSQL after a load that changed ``changed`` rows of the
    first, in a transaction of its own (after the load's commit, so it holds no lock the load
    took), when that is at least as much as autovacuum would wait for: 50 rows and a tenth
    of the table. A failure is logged, not raised: the load is committed."""
    if not isinstance(db, AsyncEngineDatabase) or not tables or changed < 50:  # SQLite: none
        return

    def analyze(conn: Connection) -> bool:
        rows = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
                            {"t": tables[0].name}).scalar()
        if changed < 50 + 0.1 * max(float(rows or 0), 0.0):
            return False
        conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        format_table = conn.dialect.identifier_preparer.format_table
        conn.exec_driver_sql(f"ANALYZE {', '.join(format_table(t) for t in tables)}")
        return True

    try:
        if await db.run(analyze):
            log.info("db.analyzed", tables=[t.name for t in tables], changed=changed)
    except Exception as exc:  # noqa: BLE001 - statistics are an optimisation
        log.warning("db.analyze_failed", tables=[t.name for t in tables], error=type(exc).__name__)
