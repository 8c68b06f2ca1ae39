"""The ``notifications`` table: create rows idempotently, claim due ones, record outcomes,
and read the inbox and the delivery problems. Every function takes a sync ``Connection``
and runs inside the caller's transaction (``Database.run`` / ``Database.write``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from followup.notify.content import Notice, from_payload, to_payload
from transcare.db.lists import one_of
from transcare.db.tables import notifications, staff
from transcare.db.upsert import insert_new
from transitions.ids import uuid5_hex

CHANNELS = ("inbox", "email", "webhook")
SENT_CHANNELS = ("email", "webhook")  # the dispatcher's; inbox rows are delivered when written
_NAMESPACE = uuid.UUID("3d0c8a61-5b2f-4e7a-9c14-8e6f0b2d7a93")
_uuid5 = uuid5_hex(_NAMESPACE)
_CHUNK = 500
Contacts = Callable[[Connection, Iterable[str]], Mapping[str, tuple[str, str]]]


def notification_id(event_id: str, recipient_id: str, channel: str) -> str:
    """The deterministic id (and idempotency key) of one event's notification to one
    recipient on one channel: ``n-`` and a UUID 5 of the three."""
    return f"n-{_uuid5(f'{event_id}|{recipient_id}|{channel}')}"


def create_notifications(conn: Connection, notices: Sequence[tuple[Notice, str, Iterable[str]]],
                         now: datetime) -> int:
    """Insert one row per (notice, recipient, channel), skipping rows that exist (same id),
    so a replayed event creates nothing twice. Inbox rows are ``delivered`` at ``now``;
    e-mail and webhook rows are ``pending`` and due at ``now``. Ids come from
    :func:`notification_id` over the notice's ``event_id``.

    Returns:
        The number of rows inserted.

    Raises:
        ValueError: an unknown channel, or a notice without ``event_id``.
    """
    rows = [_row(notice, recipient, channel, now) for notice, recipient, channels in notices
            for channel in dict.fromkeys(channels)]
    if not rows:
        return 0
    # One statement for the batch on PostgreSQL, one executemany on SQLite
    # (transcare.db.upsert); RETURNING counts the rows that were new.
    return len(insert_new(conn, notifications, ["id"], rows, returning=["id"]))


def _row(notice: Notice, recipient_id: str, channel: str, now: datetime) -> dict[str, Any]:
    if channel not in CHANNELS:
        raise ValueError(f"unknown notification channel {channel!r}")
    if not notice.event_id:
        raise ValueError("a notice needs its event_id to derive notification ids")
    nid = notification_id(notice.event_id, recipient_id, channel)
    inbox_row = channel == "inbox"
    return {
        "id": nid, "task_id": notice.task_id, "recipient_id": recipient_id,
        "channel": channel, "kind": notice.kind, "payload": to_payload(notice.with_id(nid)),
        "status": "delivered" if inbox_row else "pending", "attempts": 0,
        "next_attempt_at": None if inbox_row else now, "last_error": "", "created_at": now,
        "delivered_at": now if inbox_row else None, "read_at": None,
    }


@dataclass(frozen=True)
class Job:
    """A claimed notification. ``address`` is None when the recipient is not in the staff
    directory, ``""`` when the directory has no address for the channel."""

    id: str
    channel: str
    recipient_id: str
    attempts: int
    notice: Notice
    address: str | None


def claim_due(conn: Connection, channels: Sequence[str], now: datetime, limit: int,
              claim: timedelta, contacts: Contacts | None = None) -> list[Job]:
    """Take up to ``limit`` due rows (pending or failed, ``next_attempt_at <= now``) on
    ``channels`` and move their ``next_attempt_at`` to ``now + claim``, so no other dispatcher
    takes them until that claim expires. On PostgreSQL the rows are locked ``FOR UPDATE SKIP
    LOCKED``, so a concurrent claim skips them instead of waiting; on SQLite run this in
    ``Database.write`` (the write lock is taken first). Addresses come from ``contacts``
    (default: :func:`staff_contacts`)."""
    c = notifications.c
    query = (select(c.id, c.channel, c.recipient_id, c.attempts, c.payload)
             .where(c.status.in_(("pending", "failed")), c.channel.in_(channels),
                    c.next_attempt_at <= now)
             .order_by(c.next_attempt_at, c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        return []
    conn.execute(update(notifications).where(one_of(conn, c.id, [r.id for r in rows]))
                 .values(next_attempt_at=now + claim))
    book = (contacts or staff_contacts)(conn, {r.recipient_id for r in rows})
    return [Job(r.id, r.channel, r.recipient_id, r.attempts, from_payload(r.payload),
                _address(book.get(r.recipient_id), r.channel)) for r in rows]


def staff_contacts(conn: Connection, staff_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``staff_id -> (email, webhook_url)`` from the staff directory."""
    ids = sorted(set(staff_ids))
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), _CHUNK):
        query = select(staff.c.staff_id, staff.c.email, staff.c.webhook_url).where(
            one_of(conn, staff.c.staff_id, ids[start:start + _CHUNK]))
        found.update({sid: (email or "", url or "") for sid, email, url in conn.execute(query)})
    return found


def _address(contact: tuple[str, str] | None, channel: str) -> str | None:
    if contact is None:
        return None
    return (contact[0] if channel == "email" else contact[1]).strip()


def record_delivered(conn: Connection, job: Job, now: datetime) -> bool:
    """Mark the claimed row delivered; False when it changed since the claim (another
    dispatcher took it after the claim expired), in which case nothing is written."""
    return _settle(conn, job, status="delivered", delivered_at=now, next_attempt_at=None,
                   attempts=job.attempts + 1, last_error="")


def record_failed(conn: Connection, job: Job, reason: str, retry_at: datetime | None) -> bool:
    """Count the failed try: ``failed`` until ``retry_at``, or ``dead`` when it is None.
    False (nothing written) when the row changed since the claim."""
    return _settle(conn, job, status="failed" if retry_at else "dead", next_attempt_at=retry_at,
                   attempts=job.attempts + 1, last_error=reason[:300])


def _settle(conn: Connection, job: Job, **values: Any) -> bool:
    c = notifications.c
    result = conn.execute(update(notifications).where(
        c.id == job.id, c.attempts == job.attempts, c.status.in_(("pending", "failed"))
    ).values(**values))
    return bool(result.rowcount)


def inbox(conn: Connection, recipient_id: str, limit: int = 50,
          unread_only: bool = False) -> list[dict[str, Any]]:
    """The recipient's in-app notifications, newest first: the notice's fields plus ``id``,
    ``created_at`` and ``read_at`` (aware datetimes; ``read_at`` None while unread)."""
    c = notifications.c
    query = select(c.id, c.payload, c.created_at, c.read_at).where(
        c.recipient_id == recipient_id, c.channel == "inbox")
    if unread_only:
        query = query.where(c.read_at.is_(None))
    rows = conn.execute(query.order_by(c.created_at.desc(), c.id.desc()).limit(limit))
    return [{**r.payload, "id": r.id, "created_at": r.created_at, "read_at": r.read_at}
            for r in rows]


def mark_read(conn: Connection, recipient_id: str, ids: Iterable[str], now: datetime) -> int:
    """Mark the recipient's unread inbox notifications ``ids`` read at ``now``; other people's
    ids are ignored. Returns how many changed."""
    c = notifications.c
    result = conn.execute(update(notifications).where(
        c.recipient_id == recipient_id, c.channel == "inbox", c.read_at.is_(None),
        one_of(conn, c.id, ids)).values(read_at=now))
    return int(result.rowcount)


def delivery_problems(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Failed and dead deliveries, newest first: ids, channel, kind, status, attempts,
    ``last_error``, ``next_attempt_at`` and ``created_at``. No addresses, no content."""
    c = notifications.c
    query = (select(c.id, c.task_id, c.recipient_id, c.channel, c.kind, c.status, c.attempts,
                    c.last_error, c.next_attempt_at, c.created_at)
             .where(c.status.in_(("failed", "dead")))
             .order_by(c.created_at.desc(), c.id.desc()).limit(limit))
    return [dict(row) for row in conn.execute(query).mappings()]


def delivery_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """``(channel, status) -> number of notifications``."""
    c = notifications.c
    query = select(c.channel, c.status, func.count()).group_by(c.channel, c.status)
    return {(channel, status): int(n) for channel, status, n in conn.execute(query)}
