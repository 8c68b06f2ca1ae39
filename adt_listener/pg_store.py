"""The listener's PostgreSQL hot path on the asyncpg driver: one statement per batch.

Through SQLAlchemy's async engine a batch cost BEGIN, the duplicate lookup, the INSERT and
COMMIT: four round trips, each also a hop through SQLAlchemy's greenlet adapter. While the
workers loaded the same two cores (``bench/e2e`` on PostgreSQL) each round trip waited for a
scheduled server process, and the listener acknowledged only about 520 msg/s. Here a batch is
one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` in autocommit: one round trip, committed
(and so durable) when it returns. Only a batch holding resends of already stored messages
needs a second statement, for their original ACKs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from adt_listener.store import REJECTED, IncomingMessage, Outcome, StoreResult

_COLUMNS = ("received_at", "sending_facility", "control_id", "message_type", "patient_key",
            "peer", "charset", "raw", "ack_code", "ack", "status", "reason")
_TYPES = ("timestamptz", "text", "text", "text", "text", "text", "text", "bytea", "text", "text",
          "text", "text")
_INSERT = (
    f"INSERT INTO messages ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_COLUMNS)} FROM unnest("
    + ", ".join(f"${n}::{t}[]" for n, t in enumerate(_TYPES, 1))
    + f") WITH ORDINALITY AS batch({', '.join(_COLUMNS)}, n) ORDER BY n "
    "ON CONFLICT (sending_facility, control_id) WHERE status <> 'rejected' DO NOTHING "
    "RETURNING id, sending_facility, control_id, status"
)
# Lookups by key probe the index once a key (each key joined LATERAL to its own LIMIT 1
# lookup: transcare.db.lists.keys_present's form, written out for this raw driver
# connection). The server keeps the plan it made in a statement's first executions, when the
# table was (nearly) empty, until its statistics change, which without autovacuum is never:
# a join or `= ANY` then kept reading the whole table or the status index
# (docs/performance.md).
_KNOWN = ("SELECT m.sending_facility, m.control_id, m.ack "
          "FROM unnest($1::text[], $2::text[]) AS k(facility, control_id) "
          "JOIN LATERAL (SELECT sending_facility, control_id, ack FROM messages "
          "WHERE sending_facility = k.facility AND control_id = k.control_id "
          "AND status <> 'rejected' LIMIT 1) AS m ON true")
_DEADLOCK_RETRIES = 5
STATEMENT_TIMEOUT_S = 30.0  # a server that stops answering fails the batch (no ACK) instead of hanging
# Options of SQLAlchemy's asyncpg adapter, not of asyncpg.connect (the adapter pops them too).
_ADAPTER_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn")
# The relay's late mark skips a row another transaction holds: the normaliser's outcome (which
# sets published_at itself) or a replay (which clears it). Waiting for it instead deadlocked
# with the normaliser, each updating the other's rows in another order (bench/e2e).
_PUBLISHED = ("UPDATE messages SET published_at = $1 WHERE id IN ("
              "SELECT id FROM messages WHERE id = ANY($2::bigint[]) AND published_at IS NULL "
              "AND (processed_at IS NULL OR processed_at < $1) FOR UPDATE SKIP LOCKED)")
# The normaliser's outcomes, one statement per batch; a NULL received time matches by id alone.
_OUTCOMES = (
    "UPDATE messages AS m SET status = o.status, reason = o.reason, processed_at = $1, "
    "published_at = coalesce(m.published_at, o.published_at, $1) "
    "FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::timestamptz[]) "
    "AS o(id, received_at, status, reason, published_at) "
    "WHERE m.id = o.id AND (o.received_at IS NULL OR m.received_at = o.received_at) "
    "AND m.status != 'rejected'")
_DECIDED = ("SELECT m.id, m.received_at FROM unnest($1::bigint[]) AS k(id) "
            "JOIN LATERAL (SELECT id, received_at FROM messages WHERE id = k.id "
            "AND status IN ('processed', 'deadlettered') LIMIT 1) AS m ON true")
# The relay's marks and the normaliser's outcomes update rows by id, and an UPDATE's join
# cannot be written as one LATERAL probe an id: kept from the empty table, their plans read
# the whole table (the outcomes' a hash join over every message, growing with the store). The
# connection that runs them plans each execution with its values and the table's real size
# (about 0.2 ms of planning a statement, measured in bench/e2e).
_PLANNED_EACH_TIME = "SET plan_cache_mode = force_custom_plan"


def connect_args(url: str) -> dict[str, Any]:
    """``asyncpg.connect`` keyword arguments for a database URL, read by SQLAlchemy's own
    asyncpg dialect, so a URL means here what it means to the engine (``?ssl=require``,
    ``?ssl=disable``, ports, several hosts)."""
    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    _, params = parsed.get_dialect()().create_connect_args(parsed)
    return {k: v for k, v in params.items() if k not in _ADAPTER_ONLY}


class PgDriverRows:
    """Two asyncpg connections of the process's own, each used one statement at a time and
    connected on first use. One runs the statements whose plan the server may keep (the
    listener's insert and its lookup of resent keys, the normaliser's check for decided
    messages), the other the updates by id, planned at each execution (the relay's published
    marks, the normaliser's outcomes). In the listener the first is the ACK's path: on one
    connection each batch's insert could queue behind the relay's update of the batch before
    and its commit. (In ``bench/e2e`` on PostgreSQL this changed nothing measurable: there the
    listener waits for the server's commits while the server shares the cores with everything
    else.)

    Arguments:
        url: the message store's PostgreSQL URL (any SQLAlchemy driver name).
    """

    def __init__(self, url: str) -> None:
        args = connect_args(url)
        self._kept_plans = _Connection(args)
        self._fresh_plans = _Connection(args, setup=[_PLANNED_EACH_TIME])

    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        """Insert what is new; resends (of stored messages, or earlier in the batch) get the
        original ACK. Raises the driver's error when the database is unavailable."""
        first: dict[tuple[str, str], IncomingMessage] = {}
        fresh: list[IncomingMessage] = []
        for item in batch:
            key = item.dedupe_key
            if key is None or key not in first:
                fresh.append(item)
                if key is not None:
                    first[key] = item
        columns = [[getattr(item, name) for item in fresh] for name in _COLUMNS]
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                rows = await self._kept_plans.fetch(_INSERT, *columns)
                break
            except asyncpg.DeadlockDetectedError:
                # Two listeners inserting the same keys in opposite orders (a sender's resend
                # reaching both at once): the statement that lost did nothing; run it again.
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise
        # A row has a dedupe key exactly when the unique index covers it (IncomingMessage.dedupe_key).
        inserted = {(f, c): int(i) for i, f, c, s in rows if s != REJECTED and c is not None}
        loose = iter(sorted(int(i) for i, f, c, s in rows if not (s != REJECTED and c is not None)))
        resent = [key for key in first if key not in inserted]
        known: dict[tuple[str, str], str] = {}
        if resent:
            found = await self._kept_plans.fetch(_KNOWN, [f for f, _ in resent], [c for _, c in resent])
            known = {(f, c): ack for f, c, ack in found}
        results = []
        for item in batch:
            key = item.dedupe_key
            if key is None:
                results.append(StoreResult(item.ack, False, next(loose)))
            elif key in inserted:
                original = first[key]
                results.append(StoreResult(item.ack, False, inserted[key]) if original is item
                               else StoreResult(original.ack, True))
            elif key in known:
                results.append(StoreResult(known[key], True))
            else:  # neither inserted nor stored before: never answer it as a duplicate
                raise RuntimeError(f"message store: control id of {key[0]!r} neither stored nor found")
        return results

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        await self._fresh_plans.fetch(_PUBLISHED, at, list(ids))

    async def record_outcomes(self, outcomes: Sequence[Outcome], at: datetime) -> None:
        await self._fresh_plans.fetch(_OUTCOMES, at, [o.message_id for o in outcomes],
                          [o.received_at for o in outcomes], [o.status for o in outcomes],
                          [o.reason for o in outcomes], [o.published_at for o in outcomes])

    async def decided(self, ids: Sequence[int]) -> list[tuple[int, datetime]]:
        return [(int(i), t) for i, t in await self._kept_plans.fetch(_DECIDED, list(ids))]

    async def close(self) -> None:
        await self._kept_plans.close()
        await self._fresh_plans.close()


class _Connection:
    """One asyncpg connection, opened on first use and again after it broke; one statement
    at a time. ``setup``: statements run on each new connection (``SET ...``: sent after
    connecting rather than as startup parameters, which PgBouncer refuses unless told to
    ignore them; behind a pooler these connections need session pooling, as the driver's
    prepared statements do)."""

    def __init__(self, args: dict[str, Any], setup: Sequence[str] = ()) -> None:
        self._connect_args = args
        self._setup = tuple(setup)
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                conn = await asyncpg.connect(**self._connect_args)
                try:
                    for statement in self._setup:
                        await conn.execute(statement, timeout=STATEMENT_TIMEOUT_S)
                except BaseException:
                    conn.terminate()
                    raise
                self._conn = conn
            try:
                return list(await self._conn.fetch(sql, *args, timeout=STATEMENT_TIMEOUT_S))
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                self._drop()
                raise

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
