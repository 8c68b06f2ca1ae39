"""The roster and staff imports end to end: ``transcare roster|staff import`` as a process (exit
codes 0, 1, 2 and its output), and ``POST /api/roster`` / ``POST /api/staff`` on the real app over
a migrated SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import migrate
from transcare.db.database import open_database
from transcare.settings import Settings
from transcare.web.app import create_app
from transitions.directory_store import SqlAlchemyDirectory
from transitions.model import MemberIdentifier

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
TRANSCARE = Path(sys.executable).parent / "transcare"


def run_import(kind: str, path: Path, db_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCARE_")}
    env.update(TRANSCARE_DATABASE_URL=db_url, TRANSCARE_DATA_DIR=str(data_dir),
               TRANSCARE_LOG_LEVEL="WARNING")
    return subprocess.run([str(TRANSCARE), kind, "import", str(path)], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'transcare.db'}"


def test_cli_loads_the_examples_and_a_second_run_changes_nothing(tmp_path: Path, db_url: str) -> None:
    first = run_import("roster", EXAMPLES / "roster.csv", db_url, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "roster: 6 rows loaded (6 new, 0 updated, 0 unchanged), 0 rejected"
    again = run_import("roster", EXAMPLES / "roster.csv", db_url, tmp_path)
    assert (again.returncode, again.stdout.strip()) == (
        0, "roster: 6 rows loaded (0 new, 0 updated, 6 unchanged), 0 rejected")
    staff = run_import("staff", EXAMPLES / "staff.csv", db_url, tmp_path)
    assert staff.returncode == 0, staff.stderr
    assert staff.stdout.startswith("staff: 9 rows loaded (9 new")


def test_cli_import_takes_the_services_data_dir(tmp_path: Path) -> None:
    """``transcare up --data-dir X`` keeps its SQLite database in X: an import given the same
    ``--data-dir`` loads into it (without, it went to ./data, which the service never reads)."""
    service = tmp_path / "service"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCARE_")}
    env.update(TRANSCARE_LOG_LEVEL="WARNING")
    done = subprocess.run([str(TRANSCARE), "staff", "import", "--data-dir", str(service),
                           str(EXAMPLES / "staff.csv")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (service / "transcare.db").is_file() and not (tmp_path / "data").exists()
    again = run_import("staff", EXAMPLES / "staff.csv", f"sqlite:///{service / 'transcare.db'}",
                       service)
    assert "(0 new, 0 updated, 9 unchanged)" in again.stdout


def test_cli_reports_rejected_rows_as_file_line_reason_and_exits_1(tmp_path: Path, db_url: str) -> None:
    assert run_import("roster", EXAMPLES / "roster.csv", db_url, tmp_path).returncode == 0
    path = tmp_path / "update.csv"
    path.write_text("member_id,family_name,birth_date,identifiers,tier\r\n"
                    "HH-0001,Testpatient,1948-03-14,1001@GENHOSP;M998877@MEDICAID,medium\r\n"
                    "HH-0100,Newcomer,1990-02-30,,low\r\n"
                    "HH-0101,Newcomer,1990-01-01,1002@GENHOSP,low\r\n"
                    "HH-0102,Newcomer,1990-01-01,,urgent\r\n"
                    "HH-0103,Newcomer,1990-01-01,9@STMARYS,high\r\n", encoding="utf-8-sig")
    result = run_import("roster", path, db_url, tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "roster: 2 rows loaded (1 new, 1 updated, 0 unchanged), 3 rejected",
        f"{path}:3: birth_date: not a date in YYYY-MM-DD form",
        f"{path}:4: identifiers: the GENHOSP entry already belongs to member HH-0002",
        f"{path}:5: tier: 'urgent' is not one of high, medium, low",
    ]
    assert "Newcomer" not in result.stdout + result.stderr


@pytest.mark.parametrize(("kind", "content", "message"), [
    ("roster", None, "No such file or directory"),
    ("staff", "staff_id,name\nS1,Ana\n", "missing column: role"),
    ("roster", b"member_id\n\xff\xfe\n", "not UTF-8 text"),
    ("roster", 'member_id,tier\nHH-1,"low\n', "not valid CSV"),
])
def test_cli_exits_2_for_a_file_level_problem(tmp_path: Path, db_url: str, kind: str,
                                              content: str | bytes | None, message: str) -> None:
    path = tmp_path / "import.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = run_import(kind, path, db_url, tmp_path)
    assert result.returncode == 2
    assert f"transcare {kind} import: {path}: " in result.stderr and message in result.stderr
    assert not (tmp_path / "transcare.db").exists()  # nothing touched


@pytest.fixture
async def client(tmp_path: Path, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, database_url=db_url)
    await migrate(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


ROSTER_JSON: list[dict[str, Any]] = [
    {"member_id": "HH-1", "family_name": "Testpatient", "birth_date": "1948-03-14", "sex": "F",
     "identifiers": "1001@GENHOSP;M998877@MEDICAID", "tier": "high", "coordinator_id": "CC-N1",
     "opted_out": False, "zip": 98101},
    {"member_id": "HH-2", "identifiers": ["77@STMARYS"], "enrolled_from": "2025-01-01",
     "enrolled_to": "2024-12-31"},
]


async def test_post_roster_json_returns_the_report_and_writes(client: httpx.AsyncClient,
                                                               db_url: str) -> None:
    response = await client.post("/api/roster", json=ROSTER_JSON)
    assert response.status_code == 200
    assert response.json() == {
        "loaded": 1, "inserted": 1, "updated": 0, "unchanged": 0, "rejected": 1,
        "errors": [{"line": 2, "reason": "enrolled_to: before enrolled_from"}]}
    again = await client.post("/api/roster", json=ROSTER_JSON[:1])
    assert again.json()["unchanged"] == 1
    db = open_database(db_url)
    try:
        owners = await SqlAlchemyDirectory(db).members_by_identifiers(
            [MemberIdentifier("M998877", "MEDICAID")])
        stored = await SqlAlchemyDirectory(db).members(["HH-1"])
    finally:
        await db.dispose()
    assert owners == {MemberIdentifier("M998877", "MEDICAID"): "HH-1"}
    assert stored["HH-1"].zip == "98101" and stored["HH-1"].tier == "high"


async def test_post_accepts_text_csv_bodies(client: httpx.AsyncClient) -> None:
    for path, endpoint, count in ((EXAMPLES / "staff.csv", "/api/staff", 9),
                                  (EXAMPLES / "roster.csv", "/api/roster", 6)):
        response = await client.post(endpoint, content=path.read_bytes(),
                                     headers={"content-type": "text/csv; charset=utf-8"})
        assert response.status_code == 200, response.text
        assert (response.json()["inserted"], response.json()["errors"]) == (count, [])
    missing = await client.post("/api/staff", content=b"staff_id\nS1\n",
                                headers={"content-type": "text/csv"})
    assert (missing.status_code, missing.json()) == (422, {"detail": "missing column: role"})


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b'{"staff_id": "S1", "role": "allied"}', "application/json", 422),
    (b'[{"staff_id": "S1", "role": "allied"}, 3]', "application/json", 422),
    (b"not json", "application/json", 422),
    (b"", "application/json", 422),
    (b"staff_id,role\nS1,allied\n", "text/plain", 415),
])
async def test_post_staff_rejects_a_body_that_is_not_a_list_of_objects(
        client: httpx.AsyncClient, body: bytes, content_type: str, status: int) -> None:
    response = await client.post("/api/staff", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


async def test_malformed_json_is_answered_with_where_it_breaks(client: httpx.AsyncClient) -> None:
    body = b'[{"staff_id": "S1", "role": "allied"},\n {"staff_id": "S2", "role": "allied",}]'
    response = await client.post("/api/staff", content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("the body is not valid JSON: ")
    assert response.json()["detail"].endswith("at line 2 column 37")  # the trailing comma


async def test_post_staff_json_row_errors_still_answer_200(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/staff", json=[
        {"staff_id": "S1", "role": "supervisor", "active": True, "capacity": 0},
        {"staff_id": "S2", "role": "nurse"},
        {"staff_id": "S1", "role": "allied"}])
    assert response.status_code == 200
    assert response.json()["errors"] == [
        {"line": 2, "reason": "role: 'nurse' is not one of care_coordinator, allied, support, "
                              "supervisor, program_manager"},
        {"line": 3, "reason": "staff_id: repeats line 1"}]


async def test_the_imports_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/api/roster", "/api/staff"):
        body = paths[path]["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "text/csv"}
