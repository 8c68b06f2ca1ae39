"""Which database failures a worker waits out and runs again, and which it reports."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from transcare.db.database import is_transient, write_for_request, write_retrying


class PgError(Exception):
    """Stands in for SQLAlchemy's asyncpg adapter error, which carries the SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("exc", "transient"), [
    (OperationalError("BEGIN IMMEDIATE", None, Exception("database is locked")), True),
    (DBAPIError("INSERT", None, PgError("40P01")), True),  # deadlock detected
    (DBAPIError("UPDATE", None, PgError("40001")), True),  # serialization failure
    (DBAPIError("INSERT", None, PgError("23505")), False),  # unique violation: a real error
    (IntegrityError("INSERT", None, Exception("UNIQUE constraint failed")), False),
    (ValueError("not a database error"), False),
])
def test_transient_failures(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


class FlakyDb:
    """Fails with the given errors, then runs the function."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def write(self, fn: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return fn(None)


async def test_a_lost_deadlock_runs_again_and_is_logged() -> None:
    db, log = FlakyDb(DBAPIError("INSERT", None, PgError("40P01"))), Log()
    assert await write_retrying(db, lambda _: "done", log, "x.unavailable") == "done"  # type: ignore[arg-type]
    assert db.calls == 2
    assert [e for e, _ in log.events] == ["x.unavailable"]
    assert log.events[0][1]["error"] == "PgError"


async def test_a_real_error_is_raised_at_once() -> None:
    db = FlakyDb(DBAPIError("INSERT", None, PgError("23505")))
    with pytest.raises(DBAPIError):
        await write_retrying(db, lambda _: "done", Log(), "x.unavailable")  # type: ignore[arg-type]
    assert db.calls == 1


async def test_a_persons_request_runs_again_after_losing_a_deadlock() -> None:
    db = FlakyDb(DBAPIError("UPDATE", None, PgError("40P01")),
                 DBAPIError("UPDATE", None, PgError("40001")))
    assert await write_for_request(db, lambda _: "done") == "done"  # type: ignore[arg-type]
    assert db.calls == 3


@pytest.mark.parametrize("exc", [
    OperationalError("BEGIN IMMEDIATE", None, Exception("database is locked")),  # not waited for
    DBAPIError("INSERT", None, PgError("23505")),
])
async def test_a_persons_request_does_not_wait_for_the_database(exc: DBAPIError) -> None:
    db = FlakyDb(exc)
    with pytest.raises(DBAPIError):
        await write_for_request(db, lambda _: "done")  # type: ignore[arg-type]
    assert db.calls == 1


async def test_a_persons_request_gives_up_after_losing_five_times() -> None:
    db = FlakyDb(*[DBAPIError("UPDATE", None, PgError("40P01")) for _ in range(5)])
    with pytest.raises(DBAPIError):
        await write_for_request(db, lambda _: "done")  # type: ignore[arg-type]
    assert db.calls == 5


async def test_a_task_command_the_database_cannot_take_now_answers_503() -> None:
    from fastapi import HTTPException

    from transcare.web.tasks_api import _command

    db = FlakyDb(OperationalError("BEGIN IMMEDIATE", None, Exception("database is locked")))
    with pytest.raises(HTTPException) as caught:
        await _command(db, lambda c, now: None)  # type: ignore[arg-type]
    assert caught.value.status_code == 503 and "nothing was changed" in caught.value.detail
