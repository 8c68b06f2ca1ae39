"""The planner: from one episode event, the tasks to create, change or cancel. Pure.

- Tasks come from the rule table (``followup/default_rules.toml`` or the program's file) with
  deterministic ids (rule plus the causing event), so a replay creates nothing twice.
- A cancel (A11 ``EpisodeCancelled``, A13 ``EpisodeReopened``) cancels what it voids; a death
  (``EpisodeClosed``) cancels outreach; a merge (``EpisodesMerged``) moves tasks to the
  surviving episode and member; a readmission (``FlagRaised readmission_30d``) raises the
  priority of the member's open tasks, and tasks of a readmission episode start one step up.
- An opted-out member gets no outreach tasks (DOMAIN.md section 5, rule 4).
- Each task is assigned (:mod:`followup.assignment`) with the reason recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from followup.assignment import Workload, assign
from followup.calendar import ProgramCalendar
from followup.rules import Facts, Rule, RuleSet
from followup.task import PRIORITIES, Priority, Step, Task, TaskChange, task_id
from followup.triggers import facts
from schemas.episode_event import EpisodeEvent
from transitions.model import StaffMember


@dataclass
class PlanContext:
    rules: RuleSet
    calendar: ProgramCalendar
    staff: Mapping[str, StaffMember]
    load: Workload  # open tasks per person, updated as tasks are assigned
    delegation: bool = False


@dataclass
class Plan:
    changed: dict[str, Task] = field(default_factory=dict)
    changes: list[TaskChange] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)  # outreach rules skipped (opted out)

    def put(self, task: Task, change: TaskChange) -> None:
        self.changed[task.id] = task
        self.changes.append(change)


def plan(event: EpisodeEvent, existing: Sequence[Task], ctx: PlanContext) -> Plan:
    """What ``event`` does to the tasks. ``existing``: the tasks of the event's episode (and,
    for merges and readmissions, of the member)."""
    result = Plan()
    at = event.occurred_at or datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    current = {t.id: t for t in existing}
    _void(event, current, result, at)
    if event.type == "EpisodesMerged":
        _move(event, current, result, at)
    if event.type == "FlagRaised" and event.detail.get("flag") == "readmission_30d":
        _raise_priorities(event, current, result, at)
    for fact in facts(event):
        create(fact, ctx, current, result, event.event_id)
    return result


def create(fact: Facts, ctx: PlanContext, current: Mapping[str, Task], result: Plan,
           cause_id: str) -> None:
    """The tasks the rules make from one fact (skipping ones that already exist)."""
    for rule in ctx.rules.matching([fact]):
        tid = task_id(rule.id, f"{cause_id}|{fact.event}")
        if tid in current or tid in result.changed:
            continue
        if rule.outreach and fact.episode.opted_out:
            result.suppressed.append(rule.id)
            continue
        task = new_task(rule, fact, ctx, tid, cause_id)
        if task is not None:
            ctx.load.add(task.assignee_id)
            result.put(task, TaskChange("TaskCreated", task.id, task.clinical_at, "system",
                                        f"created, due {task.due_at.isoformat()}",
                                        {"rule_id": rule.id, "assignment_reason": task.assignment_reason}))


def new_task(rule: Rule, fact: Facts, ctx: PlanContext, tid: str, cause_id: str) -> Task | None:
    anchor = ctx.rules.anchor_of(rule, fact) or fact.at
    if anchor is None:
        return None
    due = ctx.rules.due_at(rule, anchor, ctx.calendar)
    roles = rule.allowed_roles(ctx.delegation)
    who = assign(roles, rule.delegable_to if ctx.delegation else (), fact.episode.coordinator_id or "",
                 ctx.staff, ctx.load, ctx.calendar.local(anchor).date(), ctx.delegation)
    priority = rule.priority
    if "readmission_30d" in fact.episode.flags:
        priority = _up(priority)
    return Task(
        id=tid, episode_id=fact.episode.id, member_id=fact.episode.member_id, rule_id=rule.id,
        type=rule.task_type, title=rule.title, status="open", priority=priority, clinical_at=anchor,
        due_at=due, roles=tuple(roles), delegable_to=tuple(rule.delegable_to), outreach=rule.outreach,
        opted_out=fact.episode.opted_out, assignee_id=who.staff_id, assignee_role=who.role,
        assignment_reason=who.reason, steps=ladder(rule, anchor, due, ctx), source_event_id=cause_id,
        voided_by=tuple(rule.voided_by), pinned_to_visit=rule.pinned_to_visit)


def ladder(rule: Rule, clock_start: datetime, due: datetime, ctx: PlanContext) -> tuple[Step, ...]:
    times = ctx.rules.step_times(rule, clock_start, due, ctx.calendar)
    return tuple(Step(at, s.action, s.level, s.notify) for at, s in zip(times, rule.escalation,
                                                                       strict=True))


def _void(event: EpisodeEvent, current: dict[str, Task], result: Plan, at: datetime) -> None:
    for task in list(current.values()):
        if task.active and task.episode_id == event.episode_id and event.type in task.voided_by:
            reason = f"voided by {event.type}: {event.summary}"
            cancelled = replace(task, status="cancelled", cancel_reason=reason)
            current[task.id] = cancelled
            result.put(cancelled, TaskChange("TaskCancelled", task.id, at, "system", reason,
                                             {"reason": reason, "cause": event.type}))


def _move(event: EpisodeEvent, current: dict[str, Task], result: Plan, at: datetime) -> None:
    """A merge: tasks of the folded episode go to the kept one; tasks of moved episodes
    follow them to the surviving member."""
    folded = event.detail.get("merged_episode_id")
    for task in list(current.values()):
        target = event.episode_id if task.episode_id in (folded, event.episode_id) else None
        if target is None or (task.episode_id == target and task.member_id == event.member_id):
            continue
        moved = replace(task, episode_id=target, member_id=event.member_id)
        current[task.id] = moved
        result.put(moved, TaskChange("TaskMoved", task.id, at, "system", "moved by a patient merge",
                                     {"from_episode_id": task.episode_id, "to_episode_id": target,
                                      "from_member_id": task.member_id}))


def _raise_priorities(event: EpisodeEvent, current: dict[str, Task], result: Plan,
                      at: datetime) -> None:
    for task in list(current.values()):
        if task.active and task.member_id == event.member_id and task.priority != "urgent":
            raised = replace(task, priority=_up(task.priority))
            current[task.id] = raised
            result.put(raised, TaskChange("TaskReprioritized", task.id, at, "system",
                                          f"priority raised to {raised.priority}: readmission",
                                          {"from": task.priority, "to": raised.priority}))


def _up(priority: Priority) -> Priority:
    return PRIORITIES[min(PRIORITIES.index(priority) + 1, len(PRIORITIES) - 1)]
