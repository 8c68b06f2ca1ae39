"""The message store: every received message, committed before its ACK is sent.

``MessageStore`` is the port; ``SqlAlchemyMessageStore`` the adapter for SQLite and PostgreSQL.
The store is also the relay's outbox (``published_at``) and the record of each message's fate
(``status``: accepted, processed, deadlettered, rejected).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection

from transcare.db.database import AsyncEngineDatabase, Database, ThreadedSqliteDatabase
from transcare.db.tables import UNPUBLISHED, messages, sqlite_text

if TYPE_CHECKING:
    from adt_listener.pg_store import PgDriverRows

ACCEPTED, PROCESSED, DEADLETTERED, REJECTED = "accepted", "processed", "deadlettered", "rejected"
STATUSES = (ACCEPTED, PROCESSED, DEADLETTERED, REJECTED)


class IncomingMessage(NamedTuple):
    """A message about to be stored, with the ACK that will be sent once it is committed."""

    received_at: datetime
    sending_facility: str
    control_id: str | None
    message_type: str
    patient_key: str
    peer: str
    charset: str
    raw: bytes
    ack_code: str
    ack: str
    status: str
    reason: str | None = None

    def pending(self, message_id: int) -> PendingMessage:
        """This message as the relay publishes it, once stored under ``message_id``."""
        return PendingMessage(message_id, self.received_at, self.sending_facility,
                              self.control_id, self.message_type, self.patient_key,
                              self.charset, self.raw)

    @property
    def dedupe_key(self) -> tuple[str, str] | None:
        """(MSH-4, MSH-10) for a message the unique index covers: not rejected, with a control
        id ("" counts as one, as it does for the index; the listener stores a missing MSH-10
        as None)."""
        if self.status == REJECTED or self.control_id is None:
            return None
        return (self.sending_facility, self.control_id)


class StoreResult(NamedTuple):
    """What to answer: the ACK to send and whether the message was a resend of a stored one."""

    ack: str
    duplicate: bool
    id: int | None = None  # the new row's id; None for a resend


class PendingMessage(NamedTuple):
    """A stored, accepted message the relay has not yet published."""

    id: int
    received_at: datetime
    sending_facility: str
    control_id: str | None
    message_type: str
    patient_key: str
    charset: str
    raw: bytes


class StoredMessage(NamedTuple):
    """A row as the API shows it (no raw bytes)."""

    id: int
    sending_facility: str
    control_id: str | None
    message_type: str
    received_at: datetime
    ack_code: str
    status: str
    reason: str | None
    published_at: datetime | None
    processed_at: datetime | None


class Outcome(NamedTuple):
    """The normaliser's verdict on a published message.

    ``received_at`` (from the record) makes the match exact: a record that names an id of
    another database (a topic shared with another deployment or an older data dir) changes
    nothing here. ``published_at`` (the record's Kafka timestamp, set when the relay sent it;
    without one, the outcome's time) becomes the row's ``published_at`` where the relay has
    not marked it yet: the relay marks late, so that in the steady state the row is written
    once here instead of once by each (see :class:`~adt_listener.relay.Relay`).
    """

    message_id: int
    status: str
    reason: str | None = None
    received_at: datetime | None = None
    published_at: datetime | None = None


class MessageStore(Protocol):
    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]: ...
    async def unpublished(self, limit: int,
                          received_before: datetime | None = None) -> list[PendingMessage]: ...
    async def mark_published(self, ids: Sequence[int], at: datetime) -> None: ...
    async def record_outcomes(self, outcomes: Sequence[Outcome], at: datetime) -> None: ...
    async def find(self, *, control_id: str | None = None, facility: str | None = None,
                   status: str | None = None, limit: int = 100,
                   before_id: int | None = None) -> list[StoredMessage]: ...
    async def backlog(self) -> int: ...
    async def count_by_status(self) -> dict[str, int]: ...
    async def republish(self, since: datetime | None, facility: str | None) -> int: ...
    async def requeue_unprocessed(self, published_before: datetime) -> int: ...
    async def decided(self, messages: Sequence[tuple[int, datetime]]) -> set[int]: ...


class SqlAlchemyMessageStore:
    """Message store on SQLAlchemy Core, for SQLite and PostgreSQL.

    Each operation is one transaction, written as a function of a sync ``Connection`` and run
    by the :class:`~transcare.db.database.Database` (a dedicated thread for SQLite, asyncpg
    for PostgreSQL). The listener's hot path (``store``, ``mark_published``) skips
    SQLAlchemy: on SQLite it runs on the driver connection, on PostgreSQL on an asyncpg
    connection of its own (:mod:`adt_listener.pg_store`).

    Arguments:
        db: a database whose schema is migrated.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pg: PgDriverRows | None = None
        if isinstance(db, AsyncEngineDatabase):  # PostgreSQL (SQLite is always threaded)
            from adt_listener.pg_store import PgDriverRows

            self._pg = PgDriverRows(db.url)  # connects on first use (the listener's hot path)

    async def close(self) -> None:
        """Close the hot path's own connection, if it opened one."""
        if self._pg is not None:
            await self._pg.close()

    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        """Commit a batch in one transaction; resends get their original ACK back.

        A message whose (MSH-4, MSH-10) matches an earlier accepted message, in the database or
        earlier in the same batch, is not stored again.
        """
        try:
            return await self._run_store(batch)
        except sqlite3.IntegrityError:
            # SQLite: another process stored one of these keys between our check and our
            # insert: retry one by one, so each sees the other's commit. (PostgreSQL's one
            # INSERT ... ON CONFLICT has no such gap.)
            return [(await self._run_store([item]))[0] for item in batch]

    async def _run_store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        if isinstance(self._db, ThreadedSqliteDatabase):
            return await self._db.run_dbapi(lambda conn: _store_batch(_SqliteRows(conn), batch))
        assert self._pg is not None
        return await self._pg.store(batch)

    async def unpublished(self, limit: int,
                          received_before: datetime | None = None) -> list[PendingMessage]:
        """Accepted messages not yet published, oldest first."""
        c = messages.c
        conds = [UNPUBLISHED]
        if received_before is not None:
            conds.append(c.received_at < received_before)
        query = (
            select(c.id, c.received_at, c.sending_facility, c.control_id, c.message_type,
                   c.patient_key, c.charset, c.raw)
            .where(*conds)
            .order_by(c.id)
            .limit(limit)
        )
        return await self._db.run(
            lambda conn: [PendingMessage._make(row) for row in conn.execute(query).all()])

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        """Record that these rows were published at ``at`` (the broker's acknowledgement),
        where nothing has: not where the normaliser's outcome set ``published_at`` first (from
        the record's time), nor where a later outcome (``processed_at`` from ``at`` on) was
        undone by a replay, which queued the row to be published again."""
        if not ids:
            return
        if isinstance(self._db, ThreadedSqliteDatabase):
            sql = (f"UPDATE messages SET published_at = ? WHERE id IN "
                   f"({', '.join('?' for _ in ids)}) AND published_at IS NULL "
                   "AND (processed_at IS NULL OR processed_at < ?)")
            params = (sqlite_text(at), *ids, sqlite_text(at))
            await self._db.run_dbapi(lambda conn: conn.execute(sql, params))
            return
        assert self._pg is not None
        await self._pg.mark_published(ids, at)

    async def record_outcomes(self, outcomes: Sequence[Outcome], at: datetime) -> None:
        """Set processed/deadlettered; idempotent, and never overrides a rejection.

        The normaliser's hot path: on SQLite one prepared statement for the batch on the
        driver connection, on PostgreSQL one ``UPDATE ... FROM unnest(...)`` (an UPDATE per
        message through SQLAlchemy cost the normaliser about a tenth of its time)."""
        if not outcomes:
            return
        if isinstance(self._db, ThreadedSqliteDatabase):
            now = sqlite_text(at)
            keyed = [(o.status, o.reason, now, _sqlite_time(o.published_at), now,
                      o.message_id, sqlite_text(o.received_at))
                     for o in outcomes if o.received_at is not None]
            loose = [(o.status, o.reason, now, _sqlite_time(o.published_at), now,
                      o.message_id) for o in outcomes if o.received_at is None]

            def apply(conn: sqlite3.Connection) -> None:
                if keyed:
                    conn.executemany(_SQLITE_OUTCOME + " AND received_at = ?", keyed)
                if loose:
                    conn.executemany(_SQLITE_OUTCOME, loose)

            await self._db.run_dbapi(apply)
            return
        assert self._pg is not None
        await self._pg.record_outcomes(outcomes, at)

    async def find(self, *, control_id: str | None = None, facility: str | None = None,
                   status: str | None = None, limit: int = 100,
                   before_id: int | None = None) -> list[StoredMessage]:
        c = messages.c
        conds = [cond for cond in (
            c.control_id == control_id if control_id else None,
            c.sending_facility == facility if facility else None,
            c.status == status if status else None,
            c.id < before_id if before_id else None,
        ) if cond is not None]
        query = select(c.id, c.sending_facility, c.control_id, c.message_type, c.received_at,
                       c.ack_code, c.status, c.reason, c.published_at, c.processed_at)
        query = (query.where(and_(*conds)) if conds else query).order_by(c.id.desc()).limit(limit)
        return await self._db.run(
            lambda conn: [StoredMessage._make(row) for row in conn.execute(query).all()])

    async def backlog(self) -> int:
        query = select(func.count()).select_from(messages).where(UNPUBLISHED)
        return await self._db.run(lambda conn: int(conn.execute(query).scalar_one()))

    async def count_by_status(self) -> dict[str, int]:
        query = select(messages.c.status, func.count()).group_by(messages.c.status)

        def count(conn: Connection) -> dict[str, int]:
            counts = {s: 0 for s in STATUSES}
            counts.update({s: int(n) for s, n in conn.execute(query).all()})
            return counts

        return await self._db.run(count)

    async def republish(self, since: datetime | None, facility: str | None) -> int:
        """Queue stored, non-rejected messages to be published again (``transcare replay``)."""
        c = messages.c
        conds = [c.status != REJECTED]
        if since is not None:
            conds.append(c.received_at >= since)
        if facility:
            conds.append(c.sending_facility == facility)
        stmt = update(messages).where(*conds).values(published_at=None, status=ACCEPTED)
        return await self._db.run(lambda conn: int(conn.execute(stmt).rowcount or 0))

    async def decided(self, messages_: Sequence[tuple[int, datetime]]) -> set[int]:
        """Which of these (id, received time) messages already have an outcome."""
        if not messages_:
            return set()
        wanted = {(i, _utc(t)) for i, t in messages_}
        if self._pg is not None:  # PostgreSQL: on the driver connection, as record_outcomes
            return {i for i, t in await self._pg.decided(list({i for i, _ in wanted}))
                    if (i, _utc(t)) in wanted}
        c = messages.c
        query = select(c.id, c.received_at).where(
            c.id.in_([i for i, _ in messages_]), c.status.in_((PROCESSED, DEADLETTERED)))

        def found(conn: Connection) -> set[int]:
            return {int(i) for i, t in conn.execute(query).all() if (i, _utc(t)) in wanted}

        return await self._db.run(found)

    async def requeue_unprocessed(self, published_before: datetime) -> int:
        """Mark accepted messages published before the cutoff, yet unprocessed, unpublished."""
        c = messages.c
        stmt = (update(messages).where(c.status == ACCEPTED, c.published_at < published_before)
                .values(published_at=None))
        return await self._db.run(lambda conn: int(conn.execute(stmt).rowcount or 0))


_COLUMNS = ("received_at", "sending_facility", "control_id", "message_type", "patient_key", "peer",
            "charset", "raw", "ack_code", "ack", "status", "reason")
# The hot path on SQLite goes straight to the sqlite3 driver: the same statements SQLAlchemy
# would emit, without its per-statement overhead (measured: about 1 ms per transaction).
_SQLITE_INSERT = (f"INSERT INTO messages ({', '.join(_COLUMNS)}) "
                  f"VALUES ({', '.join('?' for _ in _COLUMNS)})")
_SQLITE_OUTCOME = ("UPDATE messages SET status = ?, reason = ?, processed_at = ?, "
                   "published_at = coalesce(published_at, ?, ?) "
                   "WHERE id = ? AND status != 'rejected'")
_SQLITE_KNOWN = ("SELECT ack FROM messages WHERE sending_facility = ? AND control_id = ? "
                 "AND status != 'rejected'")


class _SqliteRows:
    """The same on the sqlite3 driver: the statements SQLAlchemy would emit, without its
    per-statement interpreter cost, on the listener's hot path."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._cur = conn.cursor()

    def known_acks(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        found = {}
        for key in keys:
            row = self._cur.execute(_SQLITE_KNOWN, key).fetchone()
            if row is not None:
                found[key] = row[0]
        return found

    def insert(self, items: Sequence[IncomingMessage]) -> list[int]:
        ids = []
        for item in items:
            self._cur.execute(_SQLITE_INSERT, _sqlite_values(item))
            ids.append(int(self._cur.lastrowid or 0))
        return ids


def _store_batch(rows: _SqliteRows,
                 batch: Sequence[IncomingMessage]) -> list[StoreResult]:
    """Insert what is new; answer resends (also within the batch) with the stored ACK."""
    keys = {item.dedupe_key for item in batch if item.dedupe_key}
    known = rows.known_acks(keys) if keys else {}
    fresh: list[IncomingMessage] = []
    for item in batch:
        key = item.dedupe_key
        if key is None:
            fresh.append(item)
        elif key not in known:
            known[key] = item.ack
            fresh.append(item)
    ids = dict(zip(map(id, fresh), rows.insert(fresh), strict=True)) if fresh else {}
    return [StoreResult(item.ack, False, ids[id(item)]) if id(item) in ids
            else StoreResult(known[item.dedupe_key], True)  # type: ignore[index]
            for item in batch]


def oldest_in_flight_age(conn: Connection, now: datetime) -> float:
    """Seconds since the oldest accepted message still waiting for the normaliser was
    received (0 when none waits): how far behind the stream workers are."""
    c = messages.c
    oldest = conn.execute(select(func.min(c.received_at)).where(c.status == ACCEPTED)).scalar()
    if oldest is None:
        return 0.0
    return max(0.0, (now - _utc(oldest)).total_seconds())


def _sqlite_values(item: IncomingMessage) -> tuple[Any, ...]:
    return (sqlite_text(item.received_at), item.sending_facility, item.control_id,
            item.message_type, item.patient_key, item.peer, item.charset, item.raw, item.ack_code,
            item.ack, item.status, item.reason)


def _sqlite_time(value: datetime | None) -> str | None:
    return None if value is None else sqlite_text(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


