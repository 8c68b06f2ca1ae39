"""Claim, complete and reassign inside a transaction: load, check (:mod:`followup.commands`),
save, record. Completing a scheduling task with its visit time creates the appointment
reminder (the rules' ``VisitScheduled`` trigger) and pins the due dates of the episode's
``pinned_to_visit`` tasks (the visit itself, medication reconciliation) to the visit.

Raises ``KeyError`` for an unknown task or person and
:class:`~followup.commands.CommandError` for a command that cannot be done.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from followup.assignment import Workload
from followup.commands import claim, complete, reassign
from followup.planner import Plan, PlanContext, create, ladder
from followup.service import FollowupContext, apply_command, staff_directory
from followup.task import Task, TaskChange
from followup.task_store import load_tasks, workload
from followup.triggers import visit_scheduled_facts
from transitions.episode_queries import get_episode
from transitions.processor import snapshot


def _task(conn: Connection, task_id: str) -> Task:
    found = load_tasks(conn, ids=[task_id])
    if not found:
        raise KeyError(f"no task {task_id}")
    return found[0]


def _person(conn: Connection, staff_id: str) -> Any:
    person = staff_directory(conn).get(staff_id)
    if person is None:
        raise KeyError(f"no staff member {staff_id}")
    return person


def claim_task(conn: Connection, task_id: str, actor_id: str, ctx: FollowupContext,
               now: datetime) -> Task:
    task, change = claim(_task(conn, task_id), _person(conn, actor_id), now)
    apply_command(conn, task, change, ctx, now)
    return task


def reassign_task(conn: Connection, task_id: str, actor_id: str, to_id: str, reason: str,
                  ctx: FollowupContext, now: datetime) -> Task:
    task, change = reassign(_task(conn, task_id), _person(conn, actor_id), _person(conn, to_id),
                            reason, now)
    apply_command(conn, task, change, ctx, now)
    return task


def complete_task(conn: Connection, task_id: str, actor_id: str, outcome: dict[str, Any],
                  ctx: FollowupContext, now: datetime) -> Task:
    task = _task(conn, task_id)
    rule = ctx.rules.by_id(task.rule_id) if _known(ctx, task.rule_id) else None
    kind = rule.outcome if rule is not None else "done"
    minimum = rule.min_attempts if rule is not None else 0
    done, change = complete(task, _person(conn, actor_id), outcome, kind, now, minimum)
    follow = _visit_scheduled(conn, done, ctx, now) if kind == "visit" else None
    apply_command(conn, done, change, ctx, now, follow)
    return done


def _known(ctx: FollowupContext, rule_id: str) -> bool:
    return any(r.id == rule_id for r in ctx.rules)


def _visit_scheduled(conn: Connection, task: Task, ctx: FollowupContext, now: datetime) -> Plan:
    visit_at = datetime.fromisoformat(str(task.outcome["visit_at"]))
    result = Plan()
    episode = get_episode(conn, task.episode_id)
    if episode is None:
        return result
    fact = visit_scheduled_facts(snapshot(episode), visit_at, now)
    pctx = PlanContext(ctx.rules, ctx.calendar, staff_directory(conn), Workload(lambda: workload(conn)),
                       ctx.delegation)
    current = {t.id: t for t in load_tasks(conn, episode_ids=[task.episode_id])}
    create(fact, pctx, current, result, f"{task.id}|visit|{visit_at.isoformat()}")
    for other in current.values():
        if other.active and other.pinned_to_visit and _known(ctx, other.rule_id):
            _pin(other, visit_at, pctx, result, now)
    return result


def _pin(task: Task, visit_at: datetime, pctx: PlanContext, result: Plan, now: datetime) -> None:
    rule = pctx.rules.by_id(task.rule_id)
    due = pctx.rules.due_at(rule, task.clinical_at, pctx.calendar, visit_at)
    if due == task.due_at:
        return
    steps = ladder(rule, task.clinical_at, due, pctx)
    fired = sum(1 for s in steps if s.at <= now)
    pinned = replace(task, due_at=due, steps=steps, next_step=max(task.next_step, fired))
    result.put(pinned, TaskChange("TaskReprioritized", task.id, now, "system",
                                  f"due pinned to the visit: {due.isoformat()}",
                                  {"from_due_at": task.due_at.isoformat(), "to_due_at": due.isoformat()}))


__all__ = ["claim_task", "complete_task", "reassign_task"]
