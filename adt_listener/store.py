"""The message store: every received message, committed before its ACK is sent.

``MessageStore`` is the port; ``SqlAlchemyMessageStore`` the adapter for SQLite and PostgreSQL.
The store is also the relay's outbox (``published_at``) and the record of each message's fate
(``status``: accepted, processed, deadlettered, rejected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import and_, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from transcare.db.tables import messages

ACCEPTED, PROCESSED, DEADLETTERED, REJECTED = "accepted", "processed", "deadlettered", "rejected"
STATUSES = (ACCEPTED, PROCESSED, DEADLETTERED, REJECTED)


@dataclass(frozen=True, slots=True)
class IncomingMessage:
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

    @property
    def dedupe_key(self) -> tuple[str, str] | None:
        if self.status == REJECTED or not self.control_id:
            return None
        return (self.sending_facility, self.control_id)


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What to answer: the ACK to send and whether the message was a resend of a stored one."""

    ack: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A stored, accepted message the relay has not yet published."""

    id: int
    received_at: datetime
    sending_facility: str
    control_id: str | None
    message_type: str
    patient_key: str
    charset: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class StoredMessage:
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """The normaliser's verdict on a published message."""

    message_id: int
    status: str
    reason: str | None = None


class MessageStore(Protocol):
    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]: ...
    async def unpublished(self, limit: int) -> list[PendingMessage]: ...
    async def mark_published(self, ids: Sequence[int], at: datetime) -> None: ...
    async def record_outcomes(self, outcomes: Sequence[Outcome], at: datetime) -> None: ...
    async def find(self, *, control_id: str | None = None, facility: str | None = None,
                   status: str | None = None, limit: int = 100,
                   before_id: int | None = None) -> list[StoredMessage]: ...
    async def backlog(self) -> int: ...
    async def count_by_status(self) -> dict[str, int]: ...
    async def republish(self, since: datetime | None, facility: str | None) -> int: ...
    async def requeue_unprocessed(self, published_before: datetime) -> int: ...


class SqlAlchemyMessageStore:
    """Message store on SQLAlchemy Core (SQLite via aiosqlite, PostgreSQL via asyncpg).

    Arguments:
        engine: an async engine on a migrated database.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        """Commit a batch in one transaction; resends get their original ACK back.

        A message whose (MSH-4, MSH-10) matches an earlier accepted message, in the database or
        earlier in the same batch, is not stored again.
        """
        try:
            return await self._store_once(batch)
        except IntegrityError:
            # Another listener stored one of these keys between our check and our insert:
            # retry one by one, so each sees the other's commit.
            return [(await self._store_once([item]))[0] for item in batch]

    async def _store_once(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        keys = {item.dedupe_key for item in batch if item.dedupe_key}
        async with self._engine.begin() as conn:
            known = await self._known_acks(conn, keys) if keys else {}
            results: list[StoreResult] = []
            rows: list[dict[str, Any]] = []
            for item in batch:
                key = item.dedupe_key
                if key is not None and key in known:
                    results.append(StoreResult(known[key], True))
                    continue
                if key is not None:
                    known[key] = item.ack
                rows.append(_row(item))
                results.append(StoreResult(item.ack, False))
            if rows:
                await conn.execute(insert(messages), rows)
        return results

    @staticmethod
    async def _known_acks(conn: Any, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        pair = tuple_(messages.c.sending_facility, messages.c.control_id)
        query = select(messages.c.sending_facility, messages.c.control_id, messages.c.ack).where(
            pair.in_(list(keys)), messages.c.status != REJECTED
        )
        return {(f, c): ack for f, c, ack in (await conn.execute(query)).all()}

    async def unpublished(self, limit: int) -> list[PendingMessage]:
        c = messages.c
        query = (
            select(c.id, c.received_at, c.sending_facility, c.control_id, c.message_type,
                   c.patient_key, c.charset, c.raw)
            .where(c.published_at.is_(None), c.status == ACCEPTED)
            .order_by(c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [PendingMessage(*row) for row in (await conn.execute(query)).all()]

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        if not ids:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                update(messages).where(messages.c.id.in_(list(ids))).values(published_at=at)
            )

    async def record_outcomes(self, outcomes: Sequence[Outcome], at: datetime) -> None:
        """Set processed/deadlettered; idempotent, and never overrides a rejection."""
        if not outcomes:
            return
        by_status: dict[tuple[str, str | None], list[int]] = {}
        for o in outcomes:
            by_status.setdefault((o.status, o.reason), []).append(o.message_id)
        async with self._engine.begin() as conn:
            for (status, reason), ids in by_status.items():
                await conn.execute(
                    update(messages)
                    .where(messages.c.id.in_(ids), messages.c.status != REJECTED)
                    .values(status=status, reason=reason, processed_at=at)
                )

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
        query = query.where(and_(*conds)) if conds else query
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(c.id.desc()).limit(limit))).all()
        return [StoredMessage(*row) for row in rows]

    async def backlog(self) -> int:
        c = messages.c
        query = select(func.count()).where(c.published_at.is_(None), c.status == ACCEPTED)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def count_by_status(self) -> dict[str, int]:
        query = select(messages.c.status, func.count()).group_by(messages.c.status)
        async with self._engine.connect() as conn:
            counts = {s: 0 for s in STATUSES}
            counts.update({s: int(n) for s, n in (await conn.execute(query)).all()})
            return counts

    async def republish(self, since: datetime | None, facility: str | None) -> int:
        """Queue stored, non-rejected messages to be published again (``transcare replay``)."""
        c = messages.c
        conds = [c.status != REJECTED]
        if since is not None:
            conds.append(c.received_at >= since)
        if facility:
            conds.append(c.sending_facility == facility)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(messages).where(*conds).values(published_at=None, status=ACCEPTED)
            )
            return int(result.rowcount or 0)


    async def requeue_unprocessed(self, published_before: datetime) -> int:
        """Mark accepted messages published before the cutoff, yet unprocessed, unpublished."""
        c = messages.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(messages)
                .where(c.status == ACCEPTED, c.published_at < published_before)
                .values(published_at=None)
            )
            return int(result.rowcount or 0)


def _row(item: IncomingMessage) -> dict[str, Any]:
    return {
        "received_at": item.received_at, "sending_facility": item.sending_facility,
        "control_id": item.control_id, "message_type": item.message_type,
        "patient_key": item.patient_key, "peer": item.peer, "charset": item.charset,
        "raw": item.raw, "ack_code": item.ack_code, "ack": item.ack, "status": item.status,
        "reason": item.reason,
    }
