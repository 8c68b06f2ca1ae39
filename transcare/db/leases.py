"""Named leases in the database: one holder at a time for work that must run once.

Portable (SQLite and PostgreSQL): a lease is a row; taking it is an UPDATE that succeeds only
for its holder or after it expired, or the INSERT of a new row. Run inside ``Database.write``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.engine import Connection

from transcare.db.tables import leases
from transcare.db.upsert import dialect_insert


def acquire(conn: Connection, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``now + ttl``; False if another
    holder has it and it has not expired."""
    c = leases.c
    renewed = conn.execute(update(leases).where(
        c.name == name, or_(c.holder == holder, c.expires_at < now)
    ).values(holder=holder, expires_at=now + ttl))
    if renewed.rowcount:
        return True
    created = conn.execute(dialect_insert(conn, leases).values(name=name, holder=holder, expires_at=now + ttl)
                           .on_conflict_do_nothing(index_elements=["name"]))
    return bool(created.rowcount)


def release(conn: Connection, name: str, holder: str) -> None:
    """Give the lease up (on a clean stop), so another holder need not wait for expiry."""
    conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))
