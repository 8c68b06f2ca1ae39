"""The episodes HTTP surface: /api/episodes with its filters, one episode with its timeline,
/api/match-reviews, and the episode figures on /metrics and the ops page. Real app, real
migrated SQLite database, filled by the real processor."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from followup.calendar import ProgramCalendar
from followup.rules_loader import default_rules
from followup.service import FollowupContext, plan_batch
from schemas.episode_event import EpisodeEvent
from tests.adt_builders import T0, adt
from tests.integration.helpers import migrate
from transcare.db.database import open_database
from transcare.db.tables import outbox
from transcare.settings import Settings
from transcare.web.app import create_app
from transitions.directory_store import SqlAlchemyDirectory
from transitions.model import Member, MemberIdentifier, StaffMember
from transitions.processor import Config, process_batch

CTX = FollowupContext(default_rules(), ProgramCalendar("America/New_York"))

EVENTS = [
    adt("A04", "e1", visit="V1", at=T0),  # M1: ED visit, then discharged home
    adt("A03", "e2", visit="V1", at=T0 + timedelta(hours=6), disposition="01"),
    # An admission 5 days after an ED visit: not a readmission (the index must be a stay).
    adt("A01", "e3", visit="V2", patient_class="I", at=T0 + timedelta(days=5)),
    adt("A04", "e4", mrn="2002", visit="W1", facility="STMARYS", authority="STMARYS",
        family="ROE", given="RICHARD", birth_date=dt.date(1950, 5, 5), sex="M",
        phone="5559990000", zip_code="99999", at=T0 + timedelta(days=1)),
    adt("A04", "e5", mrn="X9", authority="OTHER", facility="STMARYS", family="SMITH",
        given="ANN", birth_date=dt.date(1970, 7, 7), phone=None, zip_code=None),  # review
]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite:///{tmp_path / 'transcare.db'}"
    await migrate(Settings(data_dir=tmp_path, database_url=url))
    db = open_database(url)
    directory = SqlAlchemyDirectory(db)
    await directory.upsert_members([
        Member("M1", "DOE", "JANE", dt.date(1960, 1, 2), "F", "5551234567", "12345",
               (MemberIdentifier("1001", "GENHOSP"),), "low", "C1"),
        Member("M2", "ROE", "RICHARD", dt.date(1950, 5, 5), "M", "5559990000", "99999",
               (MemberIdentifier("2002", "STMARYS"),), "high", "C1", opted_out=True),
        Member("M3", "SMITH", "ANN", dt.date(1970, 7, 7), "F", "", "", (), "low", "C1"),
        Member("M4", "SMITH", "ANN", dt.date(1970, 7, 7), "F", "", "", (), "low", "C1"),
    ])
    await directory.upsert_staff([StaffMember("C1", "Coord", "care_coordinator", "north", "S1"),
                                  StaffMember("C2", "Two", "care_coordinator", "north", "S1"),
                                  StaffMember("A1", "Ally", "allied", "north", "S1"),
                                  StaffMember("S1", "Sup", "supervisor", "north")])
    await db.write(lambda c: process_batch(c, EVENTS, Config(), T0 + timedelta(days=6)))
    episode_events = await db.run(lambda c: [EpisodeEvent.model_validate_json(p) for (p,) in c.execute(
        select(outbox.c.payload).where(outbox.c.topic == "transitions.episodes.v1").order_by(outbox.c.id))])
    await db.write(lambda c: plan_batch(c, episode_events, CTX, T0))
    await db.dispose()
    app = create_app(Settings(data_dir=tmp_path, database_url=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_episodes_list_with_every_filter(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/api/episodes")).json()
    assert len(everything) == 3
    first = everything[-1]
    assert first["patient"] == {"program_id": "M1", "identifiers": ["1001@GENHOSP"],
                                "identifier_at_facility": "1001@GENHOSP"}
    assert (first["kind"], first["status"], first["disposition"]) == ("ed", "discharged", "01")
    assert first["coordinator"] == {"id": "C1", "reason": "roster"}
    by_patient = (await client.get("/api/episodes", params={"patient_id": "M2"})).json()
    assert [e["facility"] for e in by_patient] == ["STMARYS"] and by_patient[0]["opted_out"]
    assert len((await client.get("/api/episodes", params={"status": "open"})).json()) == 2
    assert len((await client.get("/api/episodes", params={"facility": "GENHOSP"})).json()) == 2
    assert (await client.get("/api/episodes", params={"flag": "frequent_ed"})).json() == []
    assert (await client.get("/api/episodes", params={"status": "bogus"})).status_code == 422


async def test_one_episode_with_its_timeline(client: httpx.AsyncClient) -> None:
    (ed,) = (await client.get("/api/episodes", params={"patient_id": "M1",
                                                        "kind": "ed"})).json()
    detail = (await client.get(f"/api/episodes/{ed['id']}")).json()
    assert [line["type"] for line in detail["timeline"]] == [
        "EpisodeOpened", "CoordinatorAssigned", "PatientDischarged", "TaskCreated", "TaskCreated"]
    assert detail["timeline"][0]["source_id"] == "GENHOSP|e1"
    assert {t["type"] for t in detail["tasks"]} == {"contact_facility", "post_ed_contact"}
    assert detail["visit_numbers"] == ["V1"]
    missing = await client.get("/api/episodes/ep-nope")
    assert missing.status_code == 404 and "ep-nope" in missing.json()["detail"]


async def test_match_reviews_list_the_ambiguous_event(client: httpx.AsyncClient) -> None:
    (review,) = (await client.get("/api/match-reviews")).json()
    assert review["event_id"] == "STMARYS|e5" and review["status"] == "pending"
    assert sorted(c["member_id"] for c in review["candidates"]) == ["M3", "M4"]


async def test_a_reviewer_decides_a_match_review_over_http(client: httpx.AsyncClient) -> None:
    from structlog.testing import capture_logs

    (review,) = (await client.get("/api/match-reviews")).json()
    url = f"/api/match-reviews/{review['id']}/resolve"
    assert (await client.post(url, json={"by": "NOBODY", "member_id": "M3"})).status_code == 422
    assert (await client.post(url, json={"by": "S1"})).status_code == 422  # member_id: say which
    assert (await client.post("/api/match-reviews/999/resolve",
                              json={"by": "S1", "member_id": "M3"})).status_code == 404
    before = len((await client.get("/api/episodes", params={"patient_id": "M2"})).json())
    # The reviewer may choose a member who was no candidate (M3 and M4 were).
    decided = await client.post(url, json={"by": "S1", "member_id": "M2"})
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert (body["outcome"], body["review"]["status"], body["review"]["decided_member_id"],
            body["review"]["resolved_by"]) == ("applied", "resolved", "M2", "S1")
    assert body["also_decided"] == []  # the patient has no other event waiting
    after = (await client.get("/api/episodes", params={"patient_id": "M2"})).json()
    assert len(after) == before + 1 and after[0]["facility"] == "STMARYS"
    again = await client.post(url, json={"by": "S1", "member_id": "M4"})
    assert again.status_code == 409 and "decided already" in again.json()["detail"]
    assert (await client.get("/api/match-reviews")).json() == []
    with capture_logs() as logs:
        (resolved,) = (await client.get("/api/match-reviews", params={"status": "resolved"})).json()
    assert resolved["decided_member_id"] == "M2" and resolved["resolved_at"]
    (view,) = [e for e in logs if e["event"] == "audit.phi_view"]
    assert view["member_ids"] == ["M2", "M3", "M4"]  # the candidates and the member decided


async def test_a_mistaken_decisions_identifier_is_forgotten_over_http(
        client: httpx.AsyncClient) -> None:
    """The reviewer chose M2 for the patient X9 of OTHER; M2 learned X9@OTHER. The member's
    identifiers say where each came from; forgetting the learned one answers what is left;
    views and the change are audited by ids, never the identifier's value."""
    from structlog.testing import capture_logs

    (review,) = (await client.get("/api/match-reviews")).json()
    decided = await client.post(f"/api/match-reviews/{review['id']}/resolve",
                                json={"by": "S1", "member_id": "M2"})
    assert decided.status_code == 200, decided.text
    url = "/api/members/M2/identifiers"
    with capture_logs() as logs:
        held = (await client.get(url)).json()
        forgotten = await client.post(f"{url}/forget",
                                      json={"by": "S1", "value": "x9", "authority": "other"})
    assert held == [{"value": "X9", "authority": "OTHER", "source": "review"},
                    {"value": "2002", "authority": "STMARYS", "source": "roster"}]
    assert forgotten.status_code == 200, forgotten.text
    assert forgotten.json() == {
        "member_id": "M2", "forgotten": {"value": "X9", "authority": "OTHER", "source": "review"},
        "identifiers": [{"value": "2002", "authority": "STMARYS", "source": "roster"}]}
    view, change = [e for e in logs if e["event"].startswith("audit.")]
    assert (view["event"], view["member_ids"]) == ("audit.phi_view", ["M2"])
    assert (change["event"], change["member_id"], change["authority"], change["source"],
            change["by"]) == ("audit.member_identifier_forgotten", "M2", "OTHER", "review", "S1")
    assert "X9" not in str(logs)
    roster = await client.post(f"{url}/forget",
                               json={"by": "S1", "value": "2002", "authority": "STMARYS"})
    assert roster.status_code == 409 and "import the roster" in roster.json()["detail"]
    gone = await client.post(f"{url}/forget", json={"by": "S1", "value": "X9", "authority": "OTHER"})
    assert gone.status_code == 404 and "holds no identifier X9@OTHER" in gone.json()["detail"]
    nobody = await client.post(f"{url}/forget", json={"by": "ZZ", "value": "X9", "authority": "OTHER"})
    assert nobody.status_code == 422
    assert (await client.get("/api/members/M9/identifiers")).status_code == 404
    assert (await client.post("/api/members/M9/identifiers/forget",
                              json={"by": "S1", "value": "X9", "authority": "OTHER"})
            ).status_code == 404


async def test_views_of_episodes_and_reviews_are_audited_by_id(client: httpx.AsyncClient) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        (review,) = (await client.get("/api/match-reviews")).json()
        listed = (await client.get("/api/episodes", params={"patient_id": "M2"})).json()
    views = [e for e in logs if e["event"] == "audit.phi_view"]
    assert [v["endpoint"] for v in views] == ["/api/match-reviews", "/api/episodes"]
    assert views[0]["review_ids"] == [review["id"]] and views[0]["member_ids"] == ["M3", "M4"]
    assert views[1]["episode_ids"] == [e["id"] for e in listed]
    assert "SMITH" not in str(views)  # ids only, never the content


async def test_metrics_and_ops_page_show_episode_figures(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    assert 'transcare_episodes_open{kind="inpatient"} 1' in text
    assert 'transcare_episodes_open{kind="ed"} 1' in text
    assert "transcare_match_reviews_pending 1" in text
    assert "transcare_roster_members 4" in text
    assert 'transcare_tasks{state="open"}' in text
    assert 'transcare_notifications{channel="inbox",status="delivered"}' in text
    page = (await client.get("/")).text
    assert "open ED visits" in page and "match reviews pending" in page and "tasks overdue" in page


async def test_tasks_list_filters_and_the_episode_shows_its_tasks(client: httpx.AsyncClient) -> None:
    mine = (await client.get("/api/tasks", params={"assignee": "C1"})).json()
    assert mine and {t["assignee"] for t in mine} == {"C1"}
    assert [t["due_at"] for t in mine] == sorted(t["due_at"] for t in mine)
    overdue = (await client.get("/api/tasks", params={"overdue": "true"})).json()
    assert all(t["overdue"] for t in overdue) and overdue  # T0 is long past
    one = mine[0]
    detail = (await client.get(f"/api/episodes/{one['episode_id']}")).json()
    assert one["id"] in {t["id"] for t in detail["tasks"]}
    shown = (await client.get(f"/api/tasks/{one['id']}")).json()
    assert [h["action"] for h in shown["history"]] == ["TaskCreated"]


async def test_task_commands_answer_404_409_and_422(client: httpx.AsyncClient) -> None:
    (task,) = [t for t in (await client.get("/api/tasks", params={"assignee": "C1"})).json()
               if t["type"] == "post_ed_contact"][:1]
    assert (await client.post("/api/tasks/t-nope/claim", json={"by": "C1"})).status_code == 404
    assert (await client.post(f"/api/tasks/{task['id']}/claim", json={"by": "NOBODY"})).status_code == 404
    wrong = await client.post(f"/api/tasks/{task['id']}/claim", json={"by": "S1"})
    assert wrong.status_code == 409 and "S1 is supervisor" in wrong.json()["detail"]
    claimed = await client.post(f"/api/tasks/{task['id']}/claim", json={"by": "C1"})
    assert claimed.status_code == 200 and claimed.json()["status"] == "claimed"
    bad = await client.post(f"/api/tasks/{task['id']}/complete",
                            json={"by": "C1", "outcome": {"attempts": [{"at": "soon", "result": "reached"}]}})
    assert bad.status_code == 422 and "attempts[1].at" in bad.json()["detail"]
    moved = await client.post(f"/api/tasks/{task['id']}/reassign",
                              json={"by": "S1", "to": "C2", "reason": "cover"})
    assert moved.json()["assignee"] == "C2"
    done = await client.post(f"/api/tasks/{task['id']}/complete", json={"by": "C2", "outcome": {
        "attempts": [{"at": "2026-03-03T10:00:00-05:00", "result": "reached"}]}})
    assert done.json()["status"] == "done"
    notes = (await client.get("/api/inbox", params={"staff_id": "C2"})).json()
    assert any(n["kind"] == "task_reassigned" and n["task_id"] == task["id"] for n in notes)
