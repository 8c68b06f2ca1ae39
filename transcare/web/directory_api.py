"""``POST /api/roster`` and ``POST /api/staff``: the roster and staff imports over HTTP.

The body is a JSON list of objects with the CSV column names (docs/roster-and-staff.md), or the
CSV file itself with ``Content-Type: text/csv``. The answer is the import report: 200 even when
rows were rejected (each with its line and reason), 422 when the body as a whole is unusable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from transcare.db.database import Database
from transitions.directory import (
    ROSTER_COLUMNS,
    STAFF_COLUMNS,
    ImportFileError,
    ImportReport,
    Parsed,
    parse_roster_csv,
    parse_roster_records,
    parse_staff_csv,
    parse_staff_records,
)
from transitions.directory_store import SqlAlchemyDirectory

T = TypeVar("T")


class RowErrorOut(BaseModel):
    """A rejected row: its line (CSV: the file line, header = 1; JSON: position from 1)."""

    line: int
    reason: str


class ImportReportOut(BaseModel):
    """``loaded`` = ``inserted`` + ``updated`` + ``unchanged``; ``rejected`` = rows in error."""

    loaded: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    errors: list[RowErrorOut]


class Problem(BaseModel):
    detail: str


def _request_body(columns: tuple[str, ...]) -> dict[str, Any]:
    item = {"type": "object", "properties": {
        name: {"type": ["string", "number", "boolean", "null"]} for name in columns}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": item}},
        "text/csv": {"schema": {"type": "string", "description": "the CSV file, header first"}},
    }}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    415: {"model": Problem, "description": "neither JSON nor text/csv"},
    422: {"model": Problem, "description": "not a JSON list of objects, or a file-level CSV "
                                           "problem (a required column missing)"},
}


def directory_router(db: Database) -> APIRouter:
    """The import routes, writing through a :class:`SqlAlchemyDirectory` on ``db``."""
    directory = SqlAlchemyDirectory(db)
    router = APIRouter(tags=["directory"])

    @router.post("/api/roster", response_model=ImportReportOut, responses=_ERRORS,
                 openapi_extra=_request_body(ROSTER_COLUMNS))
    async def import_roster(request: Request) -> ImportReportOut:
        """Upsert enrolled members (the enrollment roster); see docs/roster-and-staff.md."""
        parsed = await _parse(request, parse_roster_csv, parse_roster_records)
        return _out(await directory.upsert_members(parsed))

    @router.post("/api/staff", response_model=ImportReportOut, responses=_ERRORS,
                 openapi_extra=_request_body(STAFF_COLUMNS))
    async def import_staff(request: Request) -> ImportReportOut:
        """Upsert the staff directory; see docs/roster-and-staff.md."""
        parsed = await _parse(request, parse_staff_csv, parse_staff_records)
        return _out(await directory.upsert_staff(parsed))

    return router


async def _parse(request: Request, from_csv: Callable[[str], Parsed[T]],
                 from_json: Callable[[list[object]], Parsed[T]]) -> Parsed[T]:
    """Parse the body off the event loop.

    Raises:
        HTTPException: 415 for another content type; 422 for undecodable text, a body that is
            not a JSON list of objects, or a file-level CSV problem.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if media == "text/csv":
        text = _text(body)
        try:
            return await asyncio.to_thread(from_csv, text)
        except ImportFileError as exc:
            raise HTTPException(422, str(exc)) from None
    if media and media != "application/json" and not media.endswith("+json"):
        raise HTTPException(415, "send application/json (a list of objects) or text/csv")
    return await asyncio.to_thread(from_json, _objects(body))


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(422, f"the CSV body is not UTF-8 text (byte {exc.start})") from None


def _objects(body: bytes) -> list[object]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                                 f"column {exc.colno}") from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise HTTPException(422, "the body must be a JSON list of objects")
    return value


def _out(report: ImportReport) -> ImportReportOut:
    return ImportReportOut.model_validate(report.to_json())
