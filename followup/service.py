"""The follow-up service: episode events to tasks, ladder steps, people's commands.

Functions of a sync ``Connection`` run inside the caller's transaction (``Database.write``).
Every change is committed together with its history row, its episode timeline line, its
``followup.tasks.v1`` event and its notifications (rows plus ``followup.notifications.v1``
events) in the outbox, and for episode events with the ``planned_events`` row that makes a
replay change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from followup.assignment import Workload
from followup.calendar import ProgramCalendar
from followup.planner import Plan, PlanContext, plan
from followup.publishing import Writes, collect_changes
from followup.rules import RuleSet
from followup.task import Task, TaskChange
from followup.task_store import BatchTasks, claim_due, save_tasks, workload
from schemas.episode_event import EpisodeEvent
from transcare.db.lists import keys_present
from transcare.db.tables import episodes, planned_events
from transcare.db.upsert import insert_all
from transitions.directory_store import load_staff
from transitions.model import StaffMember

log = structlog.get_logger("transcare.followup")


def _ignore(channels: set[str]) -> None:
    pass


@dataclass(frozen=True)
class FollowupContext:
    """What planning needs besides the database. ``notified`` is called with the channels
    other than the inbox that a batch writes notifications on (before its transaction
    commits), so that the worker wakes only those loops of its dispatcher: waking every loop
    after every batch made a claim query a channel a batch, mostly for nothing."""

    rules: RuleSet
    calendar: ProgramCalendar
    delegation: bool = False
    public_url: str = "http://127.0.0.1:8080"
    notified: Callable[[set[str]], None] = _ignore


def staff_directory(conn: Connection) -> dict[str, StaffMember]:
    return {s.staff_id: s for s in load_staff(conn)}


def plan_batch(conn: Connection, events: Sequence[EpisodeEvent], ctx: FollowupContext,
               now: datetime) -> int:
    """Plan every episode event not planned before; the number of task changes made."""
    ids = list({e.event_id for e in events})
    done = keys_present(conn, planned_events.c.event_id, ids)
    known = keys_present(conn, episodes.c.id, {e.episode_id for e in events})
    staff = staff_directory(conn)
    pctx = PlanContext(ctx.rules, ctx.calendar, staff, Workload(lambda: workload(conn)),
                       ctx.delegation)
    count = 0
    planned: list[dict[str, object]] = []
    writes = Writes()
    todo: list[EpisodeEvent] = []
    for event in events:
        if event.event_id in done:
            continue
        if event.episode_id not in known:
            # Not this database's episode (the transitions stage commits an episode before its
            # events are published): a worker pointed at another deployment's topics.
            log.warning("followup.unknown_episode", event_id=event.event_id,
                        episode_id=event.episode_id)
            continue
        done.add(event.event_id)
        todo.append(event)
    # The tasks every event of the batch reads, read once; each event's plan sees what the
    # events before it changed, and the changes are written once for the batch.
    held = BatchTasks.read(conn, {e for event in todo for e in _scope(event)[0]},
                           {m for event in todo if (m := _scope(event)[1]) is not None}, now)
    for event in todo:
        result = plan(event, held.of(*_scope(event)), pctx)
        held.save(result.changed.values())
        count += _record(result, ctx, staff, now, event.event_id, event, writes)
        planned.append({"event_id": event.event_id, "processed_at": now})
    held.flush(conn)
    writes.flush(conn, now)
    if planned:
        insert_all(conn, planned_events, planned)
    return count


def _scope(event: EpisodeEvent) -> tuple[list[str], str | None]:
    """The tasks an episode event's plan reads: its episode's (and a merge's folded episode's),
    and for a flag or a merge the member's."""
    episodes = [event.episode_id]
    folded = event.detail.get("merged_episode_id")
    if folded:
        episodes.append(str(folded))
    return episodes, event.member_id if event.type in ("FlagRaised", "EpisodesMerged") else None


def _commit(conn: Connection, result: Plan, ctx: FollowupContext, staff: dict[str, StaffMember],
            now: datetime, cause: str) -> int:
    save_tasks(conn, list(result.changed.values()), now)
    writes = Writes()
    count = _record(result, ctx, staff, now, cause, None, writes)
    writes.flush(conn, now)
    return count


def _record(result: Plan, ctx: FollowupContext, staff: dict[str, StaffMember], now: datetime,
            cause: str, event: EpisodeEvent | None, writes: Writes) -> int:
    collect_changes(writes, result.changes, result.changed, staff, ctx, now, cause, event)
    return len(result.changes)


def fire_due_steps(conn: Connection, ctx: FollowupContext, now: datetime, limit: int = 500) -> int:
    """Fire every ladder step that is due (reminders, escalations), each exactly once: the
    rows are claimed (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the write lock) and their
    ``next_step`` advances in this transaction."""
    from followup.ladder import fire_due

    staff = staff_directory(conn)
    fired = 0
    moved_tasks: list[Task] = []
    writes = Writes()
    for task in claim_due(conn, now, limit):  # each task once: one upsert and flush for all
        moved, changes = fire_due(task, now)
        result = Plan()
        for change in changes:
            result.put(moved, change)
        moved_tasks.extend(result.changed.values())
        fired += _record(result, ctx, staff, now, _step_cause(task), None, writes)
    save_tasks(conn, moved_tasks, now)
    writes.flush(conn, now)
    return fired


def _step_cause(task: Task) -> str:
    """What a ladder firing's event and notification ids derive from: the task, the first
    step it fires and that step's time. Unique per step (a later sweep, or a ladder rebuilt
    for a rescheduled visit, gives new ids); the same when the same step is fired again."""
    step = task.steps[task.next_step]
    return f"{task.id}/step{task.next_step}@{step.at.isoformat()}"


def apply_command(conn: Connection, task: Task, change: TaskChange, ctx: FollowupContext,
                  now: datetime, follow_up: Plan | None = None) -> None:
    """Commit a person's command (claim, complete, reassign) and what it caused."""
    staff = staff_directory(conn)
    result = Plan()
    result.put(task, change)
    if follow_up is not None:
        for t in follow_up.changed.values():
            result.changed[t.id] = t
        result.changes.extend(follow_up.changes)
    _commit(conn, result, ctx, staff, now, f"{task.id}/{change.type}/{now.isoformat()}")


__all__: list[Any] = ["FollowupContext", "apply_command", "fire_due_steps",
                      "plan_batch", "staff_directory"]
