"""Tasks and the inbox over HTTP: ``GET /api/tasks``, ``GET /api/tasks/{id}``,
``POST /api/tasks/{id}/claim|complete|reassign``, ``GET /api/inbox``, ``POST /api/inbox/read``,
``GET /api/inbox/stream`` (server-sent events: the inbox live), ``GET /api/notifications/problems``.

Each command names who acts (``by``: a staff id); it is checked against the staff directory
and the rule's roles, and recorded with the time in the task's history.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from followup.commands import CommandError
from followup.notify.store import delivery_problems, inbox, mark_read
from followup.service import FollowupContext
from followup.task import Task
from followup.task_commands import claim_task, complete_task, reassign_task
from followup.task_store import find_tasks, history, load_tasks
from transcare.db.database import Database, is_transient, write_for_request

TaskStatus = Literal["open", "claimed", "done", "cancelled"]


class TaskOut(BaseModel):
    id: str
    episode_id: str
    member_id: str
    type: str
    title: str
    status: TaskStatus
    assignee: str | None
    role: str | None
    assignment_reason: str | None
    priority: str
    clinical_at: datetime
    due_at: datetime
    overdue: bool
    escalation_level: int
    next_step_at: datetime | None
    roles_allowed: list[str]
    outcome: dict[str, Any]
    cancel_reason: str | None


class TaskDetailOut(TaskOut):
    history: list[dict[str, Any]]


class Claim(BaseModel):
    by: str  # staff id


class Complete(BaseModel):
    by: str
    outcome: dict[str, Any] = {}


class Reassign(BaseModel):
    by: str
    to: str
    reason: str = ""


class ReadNotes(BaseModel):
    staff_id: str
    ids: list[str]


def task_out(t: Task, now: datetime) -> dict[str, Any]:
    return dict(
        id=t.id, episode_id=t.episode_id, member_id=t.member_id, type=t.type, title=t.title,
        status=t.status, assignee=t.assignee_id or None, role=t.assignee_role or None,
        assignment_reason=t.assignment_reason or None, priority=t.priority,
        clinical_at=t.clinical_at, due_at=t.due_at, overdue=t.overdue(now),
        escalation_level=t.escalation_level, next_step_at=t.next_step_at,
        roles_allowed=list(t.roles), outcome=dict(t.outcome), cancel_reason=t.cancel_reason or None)


def tasks_router(db: Database, ctx: FollowupContext) -> APIRouter:
    router = APIRouter(tags=["tasks"])

    @router.get("/api/tasks", response_model=list[TaskOut])
    async def list_tasks(assignee: str | None = None, status: TaskStatus | None = None,
                         episode_id: str | None = None, overdue: bool = False,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                         offset: Annotated[int, Query(ge=0)] = 0) -> list[TaskOut]:
        """Tasks, soonest due first; ``overdue=true``: open or claimed and past due."""
        now = datetime.now(UTC)
        found = await db.run(lambda c: find_tasks(
            c, assignee=assignee, status=status, episode_id=episode_id,
            overdue_at=now if overdue else None, limit=limit, offset=offset))
        return [TaskOut(**task_out(t, now)) for t in found]

    @router.get("/api/tasks/{task_id}", response_model=TaskDetailOut,
                responses={404: {"description": "no such task"}})
    async def show_task(task_id: str) -> TaskDetailOut:
        def read(conn: Connection) -> TaskDetailOut | None:
            found = load_tasks(conn, ids=[task_id])
            if not found:
                return None
            return TaskDetailOut(**task_out(found[0], datetime.now(UTC)),
                                 history=history(conn, task_id))
        result = await db.run(read)
        if result is None:
            raise HTTPException(404, f"no task {task_id}")
        return result

    @router.post("/api/tasks/{task_id}/claim", response_model=TaskOut, responses=_ERRORS)
    async def claim(task_id: str, body: Claim) -> TaskOut:
        """The person ``by`` takes the task."""
        return await _command(db, lambda c, now: claim_task(c, task_id, body.by, ctx, now))

    @router.post("/api/tasks/{task_id}/complete", response_model=TaskOut, responses=_ERRORS)
    async def complete(task_id: str, body: Complete) -> TaskOut:
        """Done, with the outcome the rule asks for: contact ``attempts``, a visit's
        ``visit_at`` (which creates the appointment reminder), or a ``note``."""
        return await _command(db, lambda c, now: complete_task(c, task_id, body.by, body.outcome,
                                                               ctx, now))

    @router.post("/api/tasks/{task_id}/reassign", response_model=TaskOut, responses=_ERRORS)
    async def reassign(task_id: str, body: Reassign) -> TaskOut:
        """Give the task to ``to`` (by its assignee, a supervisor or a program manager)."""
        return await _command(db, lambda c, now: reassign_task(c, task_id, body.by, body.to,
                                                               body.reason, ctx, now))

    @router.get("/api/inbox", tags=["inbox"])
    async def read_inbox(staff_id: str, unread: bool = False,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        """The person's in-app notifications, newest first."""
        return await db.run(lambda c: inbox(c, staff_id, limit, unread))

    @router.post("/api/inbox/read", tags=["inbox"])
    async def read_notes(body: Annotated[ReadNotes, Body()]) -> dict[str, int]:
        count = await write_for_request(
            db, lambda c: mark_read(c, body.staff_id, body.ids, datetime.now(UTC)))
        return {"marked": count}

    @router.get("/api/inbox/stream", tags=["inbox"])
    async def stream(staff_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: each new in-app notification of ``staff_id`` as it arrives."""
        return StreamingResponse(_events(db, staff_id, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @router.get("/api/notifications/problems", tags=["inbox"])
    async def problems(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Failed and dead e-mail and webhook deliveries, newest first (ids and reasons)."""
        return await db.run(lambda c: delivery_problems(c, limit))

    return router


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such task or person"},
    409: {"description": "the task's state or the person's role does not allow it"},
    422: {"description": "a bad outcome or request"},
    503: {"description": "the database is unavailable or locked; nothing was changed"}}


async def _command(db: Database, fn: Any) -> TaskOut:
    now = datetime.now(UTC)
    try:
        task = await write_for_request(db, lambda c: fn(c, now))
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        raise HTTPException(503, "the database is busy or unavailable; nothing was changed, "
                                 "try again") from None
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0]) if exc.args else "not found") from None
    except CommandError as exc:
        raise HTTPException(409 if exc.conflict else 422, exc.reason) from None
    return TaskOut(**task_out(task, now))


async def _events(db: Database, staff_id: str, request: Request) -> AsyncIterator[bytes]:
    seen: set[str] = {n["id"] for n in await db.run(lambda c: inbox(c, staff_id, 200, False))}
    yield b": connected\n\n"
    while not await request.is_disconnected():
        await asyncio.sleep(1.0)
        fresh = [n for n in await db.run(lambda c: inbox(c, staff_id, 50, False))
                 if n["id"] not in seen]
        for note in reversed(fresh):
            seen.add(note["id"])
            yield f"event: notification\ndata: {json.dumps(note, default=str)}\n\n".encode()
