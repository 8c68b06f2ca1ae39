"""A follow-up task: its state, deterministic id, and the steps of its escalation ladder. Pure.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from transitions.ids import uuid5_text

TaskStatus = Literal["open", "claimed", "done", "cancelled"]
Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")
ACTIVE: tuple[TaskStatus, ...] = ("open", "claimed")

_NAMESPACE = uuid.UUID("2b7c0f3e-8d41-4a6b-b5f2-6e9d1c3a7f08")
_uuid5 = uuid5_text(_NAMESPACE)


def task_id(rule_id: str, cause_id: str) -> str:
    """Deterministic: the rule and what caused the task (an episode event id, or a completed
    task plus the visit it scheduled). A replay derives the same id and creates nothing."""
    return f"t-{_uuid5(f'{rule_id}|{cause_id}')}"


@dataclass(frozen=True)
class Step:
    """One rung of the ladder, with its time fixed when the task is planned."""

    at: datetime
    action: Literal["remind", "escalate"]
    level: int  # 0 for a reminder; 1 supervisor, 2 program manager...
    notify: Literal["assignee", "supervisor", "program_manager"]

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "action": self.action, "level": self.level,
                "notify": self.notify}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Step:
        return cls(datetime.fromisoformat(d["at"]), d["action"], int(d["level"]), d["notify"])


@dataclass(frozen=True)
class Task:
    id: str
    episode_id: str
    member_id: str
    rule_id: str
    type: str
    title: str
    status: TaskStatus
    priority: Priority
    clinical_at: datetime  # when the clock started (the event's clinical time, or the visit)
    due_at: datetime
    roles: tuple[str, ...]  # who may do it (DOMAIN.md section 4)
    delegable_to: tuple[str, ...] = ()
    outreach: bool = True
    opted_out: bool = False
    assignee_id: str = ""
    assignee_role: str = ""
    assignment_reason: str = ""
    steps: tuple[Step, ...] = ()
    next_step: int = 0  # index of the next step to fire
    escalation_level: int = 0
    source_event_id: str = ""
    outcome: Mapping[str, Any] = field(default_factory=dict)
    cancel_reason: str = ""
    voided_by: tuple[str, ...] = ()
    pinned_to_visit: bool = False

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def next_step_at(self) -> datetime | None:
        """When the next step fires; None when the ladder is done or the task closed."""
        if not self.active or self.next_step >= len(self.steps):
            return None
        return self.steps[self.next_step].at

    def overdue(self, now: datetime) -> bool:
        return self.active and self.due_at < now


@dataclass(frozen=True)
class TaskChange:
    """One change to a task: a history row, an event on ``followup.tasks.v1``, maybe a line on
    the episode timeline and notifications."""

    type: str  # a TaskEventType
    task_id: str
    at: datetime
    actor: str  # staff id or "system"
    summary: str
    detail: Mapping[str, Any] = field(default_factory=dict)
