"""What a task change leaves behind, in the same transaction: a ``task_history`` row, a line on
the episode timeline, an event on ``followup.tasks.v1`` (outbox) and notifications to the
people concerned (rows for delivery, plus ``followup.notifications.v1`` events).

Who is notified: the assignee of a created, reassigned, reminded or cancelled task; for an
escalation the step's target (level 1: the assignee's supervisor, level 2: the program
managers). Episode alerts: a readmission to the coordinator's supervisor; a death to the
coordinator and the supervisor; a transfer to another facility or level of care to the
coordinator. Channels per person: the in-app inbox always, e-mail and webhook when the staff
directory has an address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.engine import Connection

from followup.notify.content import Kind, Notice, task_link
from followup.notify.store import create_notifications, notification_id
from followup.task import Task, TaskChange
from followup.task_store import add_history
from schemas.episode_event import EpisodeEvent
from schemas.task_event import Notification, TaskEvent, TaskSnapshot
from schemas.topics import NOTIFICATIONS, TASKS
from transcare.db.tables import episode_timeline, outbox
from transcare.db.upsert import insert_all
from transitions.attribution import program_managers, supervisor_of
from transitions.model import StaffMember

if TYPE_CHECKING:
    from followup.service import FollowupContext

_KINDS: dict[str, Kind] = {"TaskCreated": "task_assigned", "TaskReassigned": "task_reassigned",
                           "TaskReminded": "task_reminder", "TaskEscalated": "task_escalated",
                           "TaskCancelled": "task_cancelled"}
_ON_TIMELINE = ("TaskCreated", "TaskReminded", "TaskEscalated", "TaskCancelled", "TaskCompleted",
                "TaskReassigned")


@dataclass
class Writes:
    """The rows task changes leave behind, collected so a batch writes each table once
    (history, timeline, notifications, outbox) in :meth:`flush`, in the order recorded."""

    history: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    notices: list[tuple[Notice, str, list[str]]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def flush(self, conn: Connection, now: datetime) -> None:
        add_history(conn, self.history)
        if self.timeline:
            insert_all(conn, episode_timeline, self.timeline)
        if self.notices:
            create_notifications(conn, self.notices, now)
        if self.outbox:
            insert_all(conn, outbox, self.outbox)
        self.history, self.timeline, self.notices, self.outbox = [], [], [], []


def collect_changes(out: Writes, changes: Sequence[TaskChange], tasks: Mapping[str, Task],
                    staff: Mapping[str, StaffMember], ctx: FollowupContext, now: datetime,
                    cause: str, event: EpisodeEvent | None = None) -> None:
    """Add to ``out`` the history, timeline, task event and notification rows of ``changes``
    (and the episode alerts ``event`` asks for)."""
    notices: list[tuple[Notice, str, list[str]]] = []
    for n, change in enumerate(changes):
        task = tasks[change.task_id]
        event_id = f"{cause}/{task.id}/{change.type}/{n}"
        out.history.append({"task_id": task.id, "at": change.at, "actor": change.actor,
                            "action": change.type, "detail": _json(change.detail)})
        if change.type in _ON_TIMELINE:
            out.timeline.append({"episode_id": task.episode_id, "occurred_at": change.at,
                                 "type": change.type, "source_id": task.id,
                                 "summary": f"{task.title}: {change.summary}",
                                 "detail": _json(change.detail)})
        out.outbox.append(_outbox(TASKS.name, task.member_id, _task_event(event_id, change, task),
                                  now))
        kind = _KINDS.get(change.type)
        if kind is not None:
            notice = _notice(kind, task, change, ctx, event_id)
            notices += [(notice, who, channels(staff, who)) for who in _recipients(change, task, staff)]
    if event is not None:
        notices += episode_alerts(event, staff, ctx)
    sent = {channel for _, _, channels in notices for channel in channels if channel != "inbox"}
    if sent:
        ctx.notified(sent)
    out.notices += notices
    out.outbox += _notification_events(notices, tasks,
                                       event.member_id if event is not None else "", now)


def channels(staff: Mapping[str, StaffMember], who: str) -> list[str]:
    person = staff.get(who)
    out = ["inbox"]
    if person is not None and person.email:
        out.append("email")
    if person is not None and person.webhook_url:
        out.append("webhook")
    return out


def _recipients(change: TaskChange, task: Task, staff: Mapping[str, StaffMember]) -> list[str]:
    target = change.detail.get("notify", "assignee")
    if change.type != "TaskEscalated" or target == "assignee":
        return [task.assignee_id] if task.assignee_id else []
    if target == "supervisor":
        boss = supervisor_of(task.assignee_id, staff) if task.assignee_id else ""
        return [boss] if boss else list(program_managers(staff))
    return list(program_managers(staff))


def _notice(kind: Kind, task: Task, change: TaskChange, ctx: FollowupContext, event_id: str) -> Notice:
    level = int(change.detail.get("level", task.escalation_level)) if kind == "task_escalated" \
        else task.escalation_level  # a catch-up sweep fires several levels at once
    return Notice(kind=kind, task_id=task.id, episode_id=task.episode_id, task_type=task.type,
                  title=task.title, due_at=task.due_at, escalation_level=level,
                  priority=task.priority, link=task_link(ctx.public_url, task.id),
                  time_zone=str(ctx.calendar.zone), event_id=event_id)


def episode_alerts(event: EpisodeEvent, staff: Mapping[str, StaffMember],
                   ctx: FollowupContext) -> list[tuple[Notice, str, list[str]]]:
    """Notifications an episode event asks for without a task (readmission, death, transfer)."""
    coordinator = event.episode.coordinator_id or ""
    boss = supervisor_of(coordinator, staff) if coordinator else ""
    who: list[str] = []
    if event.type == "FlagRaised" and event.detail.get("flag") == "readmission_30d":
        who = [boss]
    elif event.type == "EpisodeClosed" and event.detail.get("reason") == "expired":
        who = [coordinator, boss]
    elif event.type == "PatientTransferred" and event.detail.get("notify_coordinator"):
        who = [coordinator]
    notice = Notice(kind="episode_alert", task_id="", episode_id=event.episode_id,
                    task_type=event.type, title=event.summary, priority="high",
                    link=f"{ctx.public_url.rstrip('/')}/inbox#episode-{event.episode_id}",
                    time_zone=str(ctx.calendar.zone), event_id=event.event_id)
    return [(notice, w, channels(staff, w)) for w in dict.fromkeys(who) if w]


def _notification_events(notices: list[tuple[Notice, str, list[str]]], tasks: Mapping[str, Task],
                         event_member: str, now: datetime) -> list[dict[str, Any]]:
    """``followup.notifications.v1`` outbox rows for the notification rows of ``notices``."""
    rows = []
    for notice, who, chans in notices:
        member = tasks[notice.task_id].member_id if notice.task_id in tasks else event_member
        for channel in chans:
            note = Notification(
                id=notification_id(notice.event_id, who, channel), kind=notice.kind,
                member_id=member, recipient_id=who, channel=channel,  # type: ignore[arg-type]
                task_id=notice.task_id or None, episode_id=notice.episode_id,
                task_type=notice.task_type or None, title=notice.title, due_at=notice.due_at,
                escalation_level=notice.escalation_level, priority=notice.priority,
                link=notice.link, created_at=now)
            rows.append(_outbox(NOTIFICATIONS.name, member, note.model_dump(mode="json"), now))
    return rows


def _task_event(event_id: str, change: TaskChange, task: Task) -> dict[str, Any]:
    return TaskEvent(
        event_id=event_id, type=change.type, member_id=task.member_id,  # type: ignore[arg-type]
        task_id=task.id, episode_id=task.episode_id, at=change.at, actor=change.actor,
        summary=change.summary, task=snapshot(task), detail=_json(change.detail),
    ).model_dump(mode="json")


def snapshot(task: Task) -> TaskSnapshot:
    return TaskSnapshot(
        id=task.id, episode_id=task.episode_id, member_id=task.member_id, rule_id=task.rule_id,
        type=task.type, title=task.title, status=task.status, priority=task.priority,
        assignee_id=task.assignee_id or None, assignee_role=task.assignee_role or None,
        assignment_reason=task.assignment_reason or None, clinical_at=task.clinical_at,
        due_at=task.due_at, escalation_level=task.escalation_level,
        next_step_at=task.next_step_at, opted_out=task.opted_out)


def _outbox(topic: str, key: str, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"topic": topic, "key": key, "created_at": now, "payload": orjson.dumps(payload).decode()}


def _json(detail: Mapping[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(dict(detail), default=str))  # type: ignore[no-any-return]
