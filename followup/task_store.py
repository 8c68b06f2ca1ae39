"""Tasks in the database (the system of record): load, save, history, workload, due steps.

Functions of a sync SQLAlchemy ``Connection``, run inside the caller's transaction, on SQLite
and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Select, bindparam, func, insert, or_, select
from sqlalchemy.engine import Connection, RowMapping

from followup.task import ACTIVE, Priority, Step, Task, TaskStatus
from transcare.db.tables import task_history, tasks
from transcare.db.upsert import upsert

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
        params["member"] = member_id
    if not params:
        return []
    query = _tasks_query("ids" in params, "episodes" in params, "member" in params, active_only)
    return [task_from_row(r) for r in conn.execute(query, params).mappings()]


@cache
def _tasks_query(by_ids: bool, by_episodes: bool, by_member: bool, active_only: bool) -> Select[Any]:
    """load_tasks' statement for one combination of filters, built once (it runs for every
    episode event; building it cost more than running it)."""
    c = tasks.c
    conds: list[Any] = []
    if by_ids:
        conds.append(c.id.in_(bindparam("ids", expanding=True)))
    if by_episodes:
        conds.append(c.episode_id.in_(bindparam("episodes", expanding=True)))
    if by_member:
        conds.append(c.member_id == bindparam("member"))
    query = select(tasks).where(or_(*conds))
    if active_only:
        query = query.where(c.status.in_(ACTIVE))
    return query.order_by(c.created_at, c.id)


def save_tasks(conn: Connection, changed: Sequence[Task], now: datetime) -> None:
    """Insert or update ``changed`` (``created_at`` is kept on update)."""
    if not changed:
        return
    upsert(conn, tasks, ["id"], [{**task_row(t, now), "created_at": now} for t in changed],
           keep=["created_at"])


def add_history(conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
    """Rows of ``task_history``: task_id, at, actor, action, detail."""
    if entries:
        conn.execute(insert(task_history), [dict(e) for e in entries])


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
    query = select(tasks).where(c.next_step_at.is_not(None), c.next_step_at <= now,
                                c.status.in_(ACTIVE)).order_by(c.next_step_at, c.id).limit(limit)
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
