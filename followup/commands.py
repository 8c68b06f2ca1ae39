"""What people do to tasks: claim, complete, reassign (DESIGN.md section 4). Pure.

Each command checks who may do it and returns the changed task with a :class:`TaskChange`, or
raises :class:`CommandError` saying what is wrong (the API answers 409/422 with it).

Outcomes (``complete``) are checked against the rule's ``outcome`` (docs/rules.md):

- ``attempts``: ``attempts``, a list of ``{"at": ISO time, "result": ...}`` with results
  ``reached``, ``no_answer``, ``left_message``, ``wrong_number``, ``declined``; done when the
  patient or family was reached, or after the rule's ``min_attempts`` logged attempts.
- ``visit``: ``visit_at`` (ISO time with offset) of the scheduled visit; it creates the
  appointment reminder and pins the visit and medication reconciliation due dates.
- ``done``: an optional ``note``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from followup.task import Task, TaskChange
from transitions.model import StaffMember

RESULTS = ("reached", "no_answer", "left_message", "wrong_number", "declined")
MANAGERS = ("supervisor", "program_manager")


class CommandError(ValueError):
    """The command cannot be done. ``conflict`` is True for a state problem (HTTP 409), False
    for a bad request (HTTP 422)."""

    def __init__(self, reason: str, conflict: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


def claim(task: Task, actor: StaffMember, now: datetime) -> tuple[Task, TaskChange]:
    """The actor takes the task (it becomes theirs if it was someone else's)."""
    _active(task)
    _may_do(task, actor)
    if task.status == "claimed" and task.assignee_id == actor.staff_id:
        raise CommandError(f"task {task.id} is already claimed by {actor.staff_id}", conflict=True)
    claimed = replace(task, status="claimed", assignee_id=actor.staff_id, assignee_role=actor.role,
                      assignment_reason=task.assignment_reason if task.assignee_id == actor.staff_id
                      else f"claimed by {actor.staff_id}")
    return claimed, TaskChange("TaskClaimed", task.id, now, actor.staff_id,
                               f"claimed by {actor.staff_id}", {"previous_assignee": task.assignee_id})


def complete(task: Task, actor: StaffMember, outcome: Mapping[str, Any], kind: str,
             now: datetime, min_attempts: int = 2) -> tuple[Task, TaskChange]:
    """Done, with the outcome the rule asks for (see the module docstring)."""
    _active(task)
    _may_do(task, actor)
    checked = check_outcome(kind, outcome, min_attempts)
    done = replace(task, status="done", outcome={**checked, "completed_by": actor.staff_id,
                                                 "completed_at": now.isoformat()})
    return done, TaskChange("TaskCompleted", task.id, now, actor.staff_id,
                            f"completed by {actor.staff_id}", {"outcome": checked})


def reassign(task: Task, actor: StaffMember, to: StaffMember, reason: str,
             now: datetime) -> tuple[Task, TaskChange]:
    """Give the task to ``to``: by its assignee, or by a supervisor or program manager."""
    _active(task)
    if actor.staff_id != task.assignee_id and actor.role not in MANAGERS:
        raise CommandError(f"{actor.staff_id} may not reassign task {task.id}: only its assignee, "
                           "a supervisor or a program manager may", conflict=True)
    if to.role not in task.roles:
        raise CommandError(f"{to.staff_id} is {to.role}; task type {task.type} may be done by "
                           f"{', '.join(task.roles)}")
    if not to.active:
        raise CommandError(f"{to.staff_id} is not active")
    moved = replace(task, status="open", assignee_id=to.staff_id, assignee_role=to.role,
                    assignment_reason=f"reassigned by {actor.staff_id}: {reason or 'no reason given'}")
    return moved, TaskChange("TaskReassigned", task.id, now, actor.staff_id,
                             f"reassigned to {to.staff_id}",
                             {"from": task.assignee_id, "to": to.staff_id, "reason": reason})


def check_outcome(kind: str, outcome: Mapping[str, Any], min_attempts: int = 2) -> dict[str, Any]:
    """The outcome, validated for the rule's outcome kind; CommandError names the field."""
    if kind == "attempts":
        return _contact(outcome, max(1, min_attempts))
    if kind == "visit":
        return {"visit_at": _time(outcome.get("visit_at"), "visit_at").isoformat(),
                **_note(outcome)}
    return _note(outcome)


def _contact(outcome: Mapping[str, Any], min_attempts: int) -> dict[str, Any]:
    attempts = outcome.get("attempts")
    if not isinstance(attempts, list) or not attempts:
        raise CommandError("attempts: log each contact attempt as {\"at\": time, \"result\": ...}")
    logged = []
    for n, attempt in enumerate(attempts, 1):
        if not isinstance(attempt, Mapping) or attempt.get("result") not in RESULTS:
            raise CommandError(f"attempts[{n}].result: one of {', '.join(RESULTS)}")
        logged.append({"at": _time(attempt.get("at"), f"attempts[{n}].at").isoformat(),
                       "result": attempt["result"]})
    if len(logged) < min_attempts and not any(a["result"] == "reached" for a in logged):
        raise CommandError(f"attempts: the patient was not reached; log at least {min_attempts} "
                           "attempts")
    return {"attempts": logged, **_note(outcome)}


def _note(outcome: Mapping[str, Any]) -> dict[str, Any]:
    note = outcome.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise CommandError("note: text of at most 2000 characters")
    return {"note": note} if note else {}


def _time(value: Any, field: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        raise CommandError(f"{field}: an ISO 8601 time with its offset") from None
    if at.tzinfo is None:
        raise CommandError(f"{field}: give the offset (for example 2026-11-24T10:00:00-05:00)")
    return at


def _active(task: Task) -> None:
    if not task.active:
        raise CommandError(f"task {task.id} is {task.status}", conflict=True)


def _may_do(task: Task, actor: StaffMember) -> None:
    if not actor.active:
        raise CommandError(f"{actor.staff_id} is not active", conflict=True)
    if actor.role not in task.roles:
        raise CommandError(f"{actor.staff_id} is {actor.role}; task type {task.type} may be done "
                           f"by {', '.join(task.roles)}", conflict=True)
