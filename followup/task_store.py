"""Tasks in the database (the system of record): load, save, history, workload, due steps.

Functions of a sync SQLAlchemy ``Connection``, run inside the caller's transaction, on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Select, func, or_, select
from sqlalchemy.engine import Connection, RowMapping

from followup.task import ACTIVE, Priority, Step, Task, TaskStatus
from transcare.db.lists import one_of_param
from transcare.db.tables import STEPS_PENDING, task_history, tasks
from transcare.db.upsert import insert_all, upsert

_COLUMNS = ("id", "episode_id", "member_id", "rule_id", "type", "title", "status", "priority",
            "clinical_at", "due_at", "assignee_id", "assignee_role", "assignment_reason",
            "escalation_level", "next_step", "opted_out", "source_event_id")
_DETAIL = ("roles", "delegable_to", "outreach", "outcome", "cancel_reason", "voided_by",
           "pinned_to_visit")


def task_row(task: Task, now: datetime) -> dict[str, Any]:
    row = {name: getattr(task, name) for name in _COLUMNS}
    detail = {name: _json(getattr(task, name)) for name in _DETAIL}
    detail["steps"] = [s.as_dict() for s in task.steps]
    return {**row, "next_step_at": task.next_step_at, "detail": detail, "updated_at": now}


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def task_from_row(row: RowMapping) -> Task:
    detail: Mapping[str, Any] = row["detail"] or {}
    fields: dict[str, Any] = {name: row[name] for name in _COLUMNS}
    fields.update(status=cast(TaskStatus, row["status"]), priority=cast(Priority, row["priority"]))
    return Task(
        **fields, roles=tuple(detail.get("roles") or ()),
        delegable_to=tuple(detail.get("delegable_to") or ()),
        outreach=bool(detail.get("outreach", True)), outcome=detail.get("outcome") or {},
        cancel_reason=detail.get("cancel_reason") or "",
        voided_by=tuple(detail.get("voided_by") or ()),
        pinned_to_visit=bool(detail.get("pinned_to_visit", False)),
        steps=tuple(Step.from_dict(s) for s in detail.get("steps") or ()))


def load_tasks(conn: Connection, *, ids: Iterable[str] = (), episode_ids: Iterable[str] = (),
               member_id: str | None = None, active_only: bool = False) -> list[Task]:
    """Tasks by id, by episode, or by member (any of them), oldest first."""
    params: dict[str, Any] = {}
    if ids := list(ids):
        params["ids"] = ids
    if episode_ids := list(episode_ids):
        params["episodes"] = episode_ids
    if member_id is not None:
        params["members"] = [member_id]
    if not params:
        return []
    query = _tasks_query(conn.dialect.name, "ids" in params, "episodes" in params,
                         "members" in params, active_only)
    return [task_from_row(r) for r in conn.execute(query, params).mappings()]


@cache
def _tasks_query(dialect: str, by_ids: bool, by_episodes: bool, by_members: bool,
                 active_only: bool, lock: bool = False) -> Select[Any]:
    """The tasks statement for one combination of filters, built once (it runs for every
    planning batch and command; building it cost more than running it). Oldest first; with
    ``lock`` (PostgreSQL), ``FOR UPDATE`` in id order, the order every writer locks tasks in."""
    c = tasks.c
    conds: list[Any] = []
    if by_ids:
        conds.append(one_of_param(dialect, c.id, "ids"))
    if by_episodes:
        conds.append(one_of_param(dialect, c.episode_id, "episodes"))
    if by_members:
        conds.append(one_of_param(dialect, c.member_id, "members"))
    query = select(tasks).where(or_(*conds))
    if active_only:
        query = query.where(c.status.in_(ACTIVE))
    return query.order_by(c.id).with_for_update() if lock else query.order_by(c.created_at, c.id)


@dataclass
class BatchTasks:
    """The tasks of one planning batch's episodes and members, read at its start in one
    statement, changed in memory event by event, and written at its end in one upsert
    (:meth:`flush`). Reading and saving them for every episode event cost two statements an
    event. On PostgreSQL the rows stay locked until commit: the scheduler skips them
    (``SKIP LOCKED``) until its next sweep, and the planner reads a row the scheduler holds
    once it committed, so neither overwrites the other."""

    now: datetime
    tasks: dict[str, tuple[datetime, Task]] = field(default_factory=dict)  # id -> created, task
    by_episode: dict[str, set[str]] = field(default_factory=dict)
    by_member: dict[str, set[str]] = field(default_factory=dict)
    changed: dict[str, Task] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)  # saved, not yet made as_stored

    @classmethod
    def read(cls, conn: Connection, episode_ids: Collection[str], member_ids: Collection[str],
             now: datetime) -> BatchTasks:
        batch = cls(now)
        params: dict[str, Any] = {"episodes": sorted(episode_ids), "members": sorted(member_ids)}
        if not episode_ids and not member_ids:
            return batch
        query = _tasks_query(conn.dialect.name, False, bool(episode_ids), bool(member_ids), False,
                             conn.dialect.name == "postgresql")
        for row in conn.execute(query, params).mappings():
            batch._keep(row["created_at"], task_from_row(row))
        return batch

    def _keep(self, created_at: datetime, task: Task) -> None:
        self.tasks[task.id] = (created_at, task)
        self.by_episode.setdefault(task.episode_id, set()).add(task.id)
        self.by_member.setdefault(task.member_id, set()).add(task.id)

    def of(self, episode_ids: Collection[str], member_id: str | None = None) -> list[Task]:
        """What :func:`load_tasks` would read now: the tasks of ``episode_ids`` or of
        ``member_id``, oldest first."""
        ids = {i for e in episode_ids for i in self.by_episode.get(e, ())}
        if member_id is not None:
            ids |= self.by_member.get(member_id, set())
        for i in ids & self.fresh:
            created, task = self.tasks[i]
            self.tasks[i] = (created, as_stored(task, self.now))
        self.fresh -= ids
        found = [self.tasks[i] for i in ids]
        mine = [(c, t) for c, t in found
                if t.episode_id in episode_ids or (member_id is not None and t.member_id == member_id)]
        return [t for _, t in sorted(mine, key=lambda ct: (ct[0], ct[1].id))]

    def save(self, changed: Iterable[Task]) -> None:
        """Keep ``changed`` for the batch's later events and for :meth:`flush`."""
        for task in changed:
            created = self.tasks[task.id][0] if task.id in self.tasks else self.now
            self._keep(created, task)
            self.fresh.add(task.id)  # made as stored when an event reads it again
            self.changed[task.id] = task

    def flush(self, conn: Connection) -> None:
        save_tasks(conn, list(self.changed.values()), self.now)
        self.changed = {}


def as_stored(task: Task, now: datetime) -> Task:
    """``task`` as the database gives it back (times in UTC, detail as JSON reads it): the
    batch's later events see exactly what reading it again would give them."""
    row = task_row(task, now)
    row["clinical_at"], row["due_at"] = task.clinical_at.astimezone(UTC), task.due_at.astimezone(UTC)
    row["detail"] = json.loads(json.dumps(row["detail"]))
    return task_from_row(cast(RowMapping, row))


def save_tasks(conn: Connection, changed: Sequence[Task], now: datetime) -> None:
    """Insert or update ``changed`` (``created_at`` is kept on update)."""
    if not changed:
        return
    # In id order: the planner locks its tasks in id order too, so a command saving several
    # tasks and a planning batch never wait for each other in a cycle (PostgreSQL).
    changed = sorted(changed, key=lambda t: t.id)
    upsert(conn, tasks, ["id"], [{**task_row(t, now), "created_at": now} for t in changed],
           keep=["created_at"])


def add_history(conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
    """Rows of ``task_history``: task_id, at, actor, action, detail."""
    if entries:
        insert_all(conn, task_history, entries)


def history(conn: Connection, task_id: str) -> list[dict[str, Any]]:
    c = task_history.c
    query = select(c.at, c.actor, c.action, c.detail).where(c.task_id == task_id).order_by(c.id)
    return [dict(r) for r in conn.execute(query).mappings()]


def workload(conn: Connection) -> dict[str, int]:
    """Open and claimed tasks per assignee (the load assignment balances)."""
    c = tasks.c
    query = select(c.assignee_id, func.count()).where(c.status.in_(ACTIVE)).group_by(c.assignee_id)
    return {staff_id: int(n) for staff_id, n in conn.execute(query) if staff_id}


def claim_due(conn: Connection, now: datetime, limit: int) -> list[Task]:
    """Active tasks whose next ladder step is due. On PostgreSQL the rows stay locked until
    commit and rows another scheduler holds are skipped (``FOR UPDATE SKIP LOCKED``)."""
    c = tasks.c
    query = select(tasks).where(STEPS_PENDING, c.next_step_at <= now) \
        .order_by(c.next_step_at, c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [task_from_row(r) for r in conn.execute(query).mappings()]


def find_tasks(conn: Connection, *, assignee: str | None = None, status: str | None = None,
               episode_id: str | None = None, overdue_at: datetime | None = None,
               limit: int = 100, offset: int = 0) -> list[Task]:
    """Tasks for the API, soonest due first."""
    c = tasks.c
    conds: list[Any] = []
    for column, value in ((c.assignee_id, assignee), (c.status, status), (c.episode_id, episode_id)):
        if value:
            conds.append(column == value)
    if overdue_at is not None:
        conds += [c.due_at < overdue_at, c.status.in_(ACTIVE)]
    query = select(tasks).where(*conds).order_by(c.due_at, c.id).limit(limit).offset(offset)
    return [task_from_row(r) for r in conn.execute(query).mappings()]


def count_tasks(conn: Connection, now: datetime) -> dict[str, int]:
    """Open, claimed, overdue and escalated counts (ops page, /metrics)."""
    c = tasks.c
    by_status: dict[str, int] = {s: int(n) for s, n in conn.execute(
        select(c.status, func.count()).group_by(c.status))}
    overdue = conn.execute(select(func.count()).where(c.status.in_(ACTIVE), c.due_at < now))
    escalated = conn.execute(select(func.count()).where(c.status.in_(ACTIVE), c.escalation_level > 0))
    return {"open": int(by_status.get("open", 0)), "claimed": int(by_status.get("claimed", 0)),
            "overdue": int(overdue.scalar_one()), "escalated": int(escalated.scalar_one())}
