"""The transitions stage of the worker: ADT events to episodes, and the timers around it.

Thin adapters around :mod:`transitions.processor`: decode, run a batch in one database
transaction, wake the outbox publisher. A batch that fails is retried event by event so one bad
event never stops the others; a database that is down or busy is waited for, never skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from transcare import metrics
from transcare.db.database import Database, write_retrying
from transcare.db.leases import acquire
from transcare.halving import run_halving
from transcare.settings import Settings
from transitions.matching import MatchPolicy
from transitions.processor import (
    BatchResult,
    Config,
    Incoming,
    Received,
    process_batch,
    record_failure,
    view_of,
)
from transitions.state import Rules
from transitions.sweep import sweep_stale

log = structlog.get_logger("transcare.transitions")
T = TypeVar("T")


def transitions_config(settings: Settings) -> Config:
    """The processor's rules and matching policy from settings."""
    post_acute = frozenset(name for name, f in settings.facilities.items()
                           if f.care_setting == "post_acute")
    rules = Rules(frequent_ed_threshold=settings.frequent_ed_threshold,
                  stale_ed=timedelta(hours=settings.stale_ed_hours),
                  stale_inpatient=timedelta(days=settings.stale_inpatient_days),
                  post_acute_facilities=post_acute)
    policy = MatchPolicy(threshold=settings.match_threshold,
                         review_floor=settings.match_review_floor)
    return Config(rules=rules, policy=policy)


def decode(values: Sequence[bytes]) -> list[Received]:
    """Events from ``adt.events.v1`` values, read as far as matching needs (the whole event
    only for those that may be an enrolled patient's: :class:`Received`); an unreadable one is
    logged and counted."""
    events = []
    for value in values:
        try:
            events.append(Received.of(value))
        except ValidationError as exc:
            metrics.ADT_EVENTS_HANDLED.labels("failed", "").inc()
            log.error("transitions.undecodable_event", errors=exc.error_count())
    return events


# Events per transaction. Each transaction reads the batch's members, staff, caseload and
# episodes once and writes what changed once, so larger ones cost less per event (worker code
# in-process: 0.52 ms/msg with 50, 0.33 with 200, 0.30 with 500). Since the listener stores into
# a SQLite file of its own, nothing waits for the workers' write lock but the web's commands.
CHUNK = 500


async def handle(db: Database, events: Sequence[Incoming], config: Config) -> None:
    """Process a batch, :data:`CHUNK` events per transaction."""
    for start in range(0, len(events), CHUNK):
        await _handle_chunk(db, events[start:start + CHUNK], config)


async def _handle_chunk(db: Database, events: Sequence[Incoming], config: Config) -> None:
    """Process events in one transaction; when that fails, each half the same way down to
    single events (:func:`transcare.halving.run_halving`), and record what still fails alone."""

    async def attempt(run: Sequence[Incoming]) -> None:
        try:
            _account(run, await _write_batch(db, run, config))
        except Exception as exc:
            if len(run) > 1:
                log.warning("transitions.batch_failed", size=len(run), error=type(exc).__name__)
            raise

    async def give_up(event: Incoming, exc: Exception) -> None:
        view = view_of(event)
        log.error("transitions.event_failed", event_id=view.event_id,
                  message_id=view.message_id, error=type(exc).__name__)
        metrics.ADT_EVENTS_HANDLED.labels("failed", view.header.sending_facility or "").inc()
        await _record_failure(db, event)

    await run_halving(events, attempt, give_up)


async def _record_failure(db: Database, event: Incoming) -> None:
    def fn(conn: Connection) -> None:
        record_failure(conn, event, datetime.now(UTC))

    await _write_with_retry(db, fn)


async def _write_batch(db: Database, events: Sequence[Incoming], config: Config) -> BatchResult:
    return await _write_with_retry(
        db, lambda c: process_batch(c, events, config, datetime.now(UTC)))


async def _write_with_retry(db: Database, fn: Callable[[Connection], T]) -> T:
    """Run ``fn`` in a write transaction, again while the database is unreachable or locked
    or the transaction lost a deadlock (``transcare.db.database.write_retrying``)."""
    return await write_retrying(db, fn, log, "transitions.database_unavailable")


def _account(events: Sequence[Incoming], result: BatchResult) -> None:
    for (outcome, facility), n in result.outcomes.items():
        metrics.ADT_EVENTS_HANDLED.labels(outcome, facility).inc(n)
    metrics.EPISODE_EVENTS.inc(result.episode_events)
    now = datetime.now(UTC)
    for event in events:
        received = view_of(event).received_at
        metrics.TRANSITIONS_LATENCY.observe(max(0.0, (now - received).total_seconds()))


async def stale_sweep(db: Database, config: Config, holder: str) -> int:
    """Flag stale episodes once across all workers (a database lease); the number flagged."""
    now = datetime.now(UTC)
    if not await db.write(lambda c: acquire(c, "stale-sweep", holder, now, timedelta(minutes=5))):
        return 0
    return await db.write(lambda c: sweep_stale(c, config.rules, now))
