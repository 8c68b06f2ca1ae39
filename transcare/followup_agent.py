"""The follow-up stage of the worker: episode events to tasks, the scheduler, the dispatcher.

Thin adapters around :mod:`followup.service`: decode, plan a batch in one transaction, wake the
outbox publisher and the notification dispatcher. The scheduler runs in one worker at a time
(a database lease) and claims the due rows it fires, so a rebalance or a second worker never
fires a step twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from followup.calendar import ProgramCalendar
from followup.rules_loader import program_rules
from followup.service import FollowupContext, fire_due_steps, plan_batch
from schemas.episode_event import EpisodeEvent
from transcare import metrics
from transcare.db.database import Database, write_retrying
from transcare.db.leases import acquire
from transcare.halving import run_halving
from transcare.settings import Settings

log = structlog.get_logger("transcare.followup")
T = TypeVar("T")
SCHEDULER_LEASE = "followup-scheduler"


def followup_context(settings: Settings) -> FollowupContext:
    """Rules (the program's file or the default table) and the program calendar.

    Raises:
        RuleError: the rule file is invalid (the message names the rule and the field).
    """
    return FollowupContext(
        rules=program_rules(settings.rules_file),
        calendar=ProgramCalendar(settings.program_time_zone, settings.program_closures),
        delegation=settings.delegation_enabled, public_url=settings.public_url)


def decode(values: Sequence[bytes]) -> list[EpisodeEvent]:
    events = []
    for value in values:
        try:
            events.append(EpisodeEvent.model_validate_json(value))
        except ValidationError as exc:
            metrics.FOLLOWUP_ERRORS.labels("undecodable").inc()
            log.error("followup.undecodable_event", errors=exc.error_count())
    return events


# Episode events per planning transaction (see transcare.transitions_agent.CHUNK), and ladder
# steps per scheduler transaction.
CHUNK = 500
STEPS_PER_TRANSACTION = 100
MAX_TRANSACTIONS_PER_SWEEP = 50  # the rest waits for the next sweep


async def plan(db: Database, events: Sequence[EpisodeEvent], ctx: FollowupContext) -> int:
    """Plan a batch, :data:`CHUNK` events per transaction; the number of task changes."""
    total = 0
    for start in range(0, len(events), CHUNK):
        total += await _plan_chunk(db, events[start:start + CHUNK], ctx)
    return total


async def _plan_chunk(db: Database, events: Sequence[EpisodeEvent], ctx: FollowupContext) -> int:
    """Plan events in one transaction; when that fails, each half the same way down to single
    events (:func:`transcare.halving.run_halving`), logging (never dropping silently) the ones
    that still fail alone."""

    async def attempt(run: Sequence[EpisodeEvent]) -> int:
        try:
            return await _retrying(db, lambda c: plan_batch(c, run, ctx, datetime.now(UTC)))
        except Exception as exc:
            if len(run) > 1:
                log.warning("followup.batch_failed", size=len(run), error=type(exc).__name__)
            raise

    async def give_up(event: EpisodeEvent, exc: Exception) -> None:
        metrics.FOLLOWUP_ERRORS.labels("plan_failed").inc()
        log.error("followup.event_failed", event_id=event.event_id, error=type(exc).__name__)

    return sum(await run_halving(events, attempt, give_up))


async def schedule(db: Database, ctx: FollowupContext, holder: str,
                   clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    """One scheduler sweep if this worker holds the lease: fire every due ladder step."""
    now = clock()
    if not await db.write(lambda c: acquire(c, SCHEDULER_LEASE, holder, now, timedelta(seconds=30))):
        return 0
    fired = 0
    for _ in range(MAX_TRANSACTIONS_PER_SWEEP):  # the due steps, a bounded number at a time
        n = await _retrying(db, lambda c: fire_due_steps(c, ctx, now, STEPS_PER_TRANSACTION))
        fired += n
        if n < STEPS_PER_TRANSACTION:
            break
    if fired:
        metrics.LADDER_STEPS.inc(fired)
    return fired


async def _retrying(db: Database, fn: Callable[[Connection], T]) -> T:
    return await write_retrying(db, fn, log, "followup.database_unavailable")
