"""Follow-up events (schema version 1): task changes on ``followup.tasks.v1`` and notifications
on ``followup.notifications.v1``. Both are keyed by the program member id.

Notifications carry ids, the task type, the due time and a link: never PHI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from schemas.adt_event import SCHEMA_VERSION

TaskEventType = Literal[
    "TaskCreated", "TaskClaimed", "TaskCompleted", "TaskReassigned", "TaskCancelled",
    "TaskReminded", "TaskEscalated", "TaskReprioritized", "TaskMoved",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )


class TaskSnapshot(_Frozen):
    """The task after the change."""

    id: str
    episode_id: str
    member_id: str
    rule_id: str
    type: str
    title: str
    status: Literal["open", "claimed", "done", "cancelled"]
    priority: Literal["low", "normal", "high", "urgent"]
    assignee_id: str | None = None
    assignee_role: str | None = None
    assignment_reason: str | None = None
    clinical_at: AwareDatetime  # when the clock started
    due_at: AwareDatetime
    escalation_level: int = 0
    next_step_at: AwareDatetime | None = None
    opted_out: bool = False


class TaskEvent(_Frozen):
    """One change to one task."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str  # deterministic: the cause plus the task and the change
    type: TaskEventType
    member_id: str  # the Kafka key
    task_id: str
    episode_id: str
    at: AwareDatetime  # when it happened (the step's scheduled time for reminders/escalations)
    actor: str  # staff id, or "system"
    summary: str
    task: TaskSnapshot
    detail: dict[str, Any] = {}


class Notification(_Frozen):
    """One notification to one person on one channel (its id is the idempotency key)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str
    kind: Literal["task_assigned", "task_reassigned", "task_reminder", "task_escalated",
                  "task_cancelled", "episode_alert"]
    member_id: str  # the Kafka key (never shown in a notification body)
    recipient_id: str  # staff id
    channel: Literal["inbox", "email", "webhook"]
    task_id: str | None
    episode_id: str
    task_type: str | None
    title: str
    due_at: AwareDatetime | None
    escalation_level: int = 0
    priority: str | None = None
    link: str
    created_at: AwareDatetime
