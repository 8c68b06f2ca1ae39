"""The escalation ladder of one task: which steps are due, and what firing them changes. Pure.

Each step fires once: ``next_step`` advances past it in the same transaction that records the
event. A scheduler that was down fires every step that came due meanwhile, in order, each with
its scheduled time.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from followup.task import Task, TaskChange


def fire_due(task: Task, now: datetime) -> tuple[Task, list[TaskChange]]:
    """``task`` with every step due at ``now`` fired, and one change per step."""
    changes: list[TaskChange] = []
    while task.next_step_at is not None and task.next_step_at <= now:
        step = task.steps[task.next_step]
        detail = {"step": task.next_step, "level": step.level, "notify": step.notify,
                  "scheduled_at": step.at.isoformat(), "fired_at": now.isoformat(),
                  "assignee_id": task.assignee_id}
        if step.action == "remind":
            task = replace(task, next_step=task.next_step + 1)
            changes.append(TaskChange("TaskReminded", task.id, step.at, "system",
                                      f"reminder: due {task.due_at.isoformat()}",
                                      detail))
        else:
            task = replace(task, next_step=task.next_step + 1,
                           escalation_level=max(task.escalation_level, step.level))
            changes.append(TaskChange("TaskEscalated", task.id, step.at, "system",
                                      f"escalated to level {step.level} ({step.notify})", detail))
    return task, changes
