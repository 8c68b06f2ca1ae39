"""In-memory fakes of the ports, for unit tests. Each one passes its port's contract suite."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from adt_listener.store import (
    ACCEPTED,
    REJECTED,
    STATUSES,
    IncomingMessage,
    Outcome,
    PendingMessage,
    StoredMessage,
    StoreResult,
)


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    item: IncomingMessage
    status: str
    reason: str | None
    published_at: datetime | None = None
    processed_at: datetime | None = None


class FakeMessageStore:
    """``MessageStore`` in a dict. Each call is atomic (no await inside), like one transaction.

    Duplicate detection follows the SQL adapter: one non-rejected message per (MSH-4, MSH-10).
    """

    def __init__(self) -> None:
        self._rows: dict[int, _Row] = {}
        self._next_id = 1

    @property
    def raw_rows(self) -> list[IncomingMessage]:
        """Every stored message as submitted, in id order (for assertions)."""
        return [row.item for row in self._rows.values()]

    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        known = {row.item.dedupe_key: row.item.ack for row in self._rows.values()
                 if row.status != REJECTED and row.item.dedupe_key}
        results = []
        for item in batch:
            key = item.dedupe_key
            if key is not None and key in known:
                results.append(StoreResult(known[key], True))
                continue
            if key is not None:
                known[key] = item.ack
            self._rows[self._next_id] = _Row(self._next_id, item, item.status, item.reason)
            results.append(StoreResult(item.ack, False, self._next_id))
            self._next_id += 1
        return results

    async def unpublished(self, limit: int,
                          received_before: datetime | None = None) -> list[PendingMessage]:
        pending = [r for r in self._rows.values() if r.published_at is None
                   and r.status == ACCEPTED
                   and (received_before is None or r.item.received_at < received_before)]
        return [_pending(r) for r in pending[:limit]]

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        for i in ids:
            row = self._rows.get(i)
            if row is not None and row.published_at is None and (
                    row.processed_at is None or row.processed_at < at):
                self._rows[i] = replace(row, published_at=at)

    async def record_outcomes(self, outcomes: Sequence[Outcome], at: datetime) -> None:
        for o in outcomes:
            row = self._rows.get(o.message_id)
            if o.received_at is not None and row is not None \
                    and row.item.received_at != o.received_at:
                continue
            if row is not None and row.status != REJECTED:
                self._rows[o.message_id] = replace(row, status=o.status, reason=o.reason,
                                                   processed_at=at,
                                                   published_at=row.published_at or o.published_at or at)

    async def find(self, *, control_id: str | None = None, facility: str | None = None,
                   status: str | None = None, limit: int = 100,
                   before_id: int | None = None) -> list[StoredMessage]:
        rows = [r for r in reversed(self._rows.values())
                if (not control_id or r.item.control_id == control_id)
                and (not facility or r.item.sending_facility == facility)
                and (not status or r.status == status)
                and (not before_id or r.id < before_id)]
        return [_stored(r) for r in rows[:limit]]

    async def backlog(self) -> int:
        return len(await self.unpublished(len(self._rows)))

    async def count_by_status(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for r in self._rows.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    async def republish(self, since: datetime | None, facility: str | None) -> int:
        hits = [r for r in self._rows.values() if r.status != REJECTED
                and (since is None or r.item.received_at >= since)
                and (not facility or r.item.sending_facility == facility)]
        for r in hits:
            self._rows[r.id] = replace(r, published_at=None, status=ACCEPTED)
        return len(hits)

    async def requeue_unprocessed(self, published_before: datetime) -> int:
        hits = [r for r in self._rows.values() if r.status == ACCEPTED
                and r.published_at is not None and r.published_at < published_before]
        for r in hits:
            self._rows[r.id] = replace(r, published_at=None)
        return len(hits)

    async def decided(self, messages: Sequence[tuple[int, datetime]]) -> set[int]:
        return {i for i, at in messages if i in self._rows
                and self._rows[i].item.received_at == at
                and self._rows[i].status in ("processed", "deadlettered")}


def _pending(r: _Row) -> PendingMessage:
    i = r.item
    return PendingMessage(r.id, i.received_at, i.sending_facility, i.control_id, i.message_type,
                          i.patient_key, i.charset, i.raw)


def _stored(r: _Row) -> StoredMessage:
    i = r.item
    return StoredMessage(r.id, i.sending_facility, i.control_id, i.message_type, i.received_at,
                         i.ack_code, r.status, r.reason, r.published_at, r.processed_at)
