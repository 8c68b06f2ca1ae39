"""The coordinator inbox (``/inbox``) and the ops page (``/``) in a real browser.

Debian's Chromium (``make browser`` installs it) driven by Playwright, the real app under uvicorn
on a free port, over a migrated SQLite database whose tasks were made by the real pipeline: ADT
events through the transitions processor, their episode events through the follow-up planner,
then the ladder scheduler at the same clock (so one task is overdue and escalated).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from playwright.async_api import Locator, Page, async_playwright, expect
from sqlalchemy import select

from followup.service import FollowupContext, fire_due_steps, plan_batch
from followup.task import Task
from followup.task_store import find_tasks, history
from schemas.adt_event import AdtEvent
from schemas.episode_event import EpisodeEvent
from tests.adt_builders import adt
from tests.integration.helpers import migrate
from transcare.db.database import Database, open_database
from transcare.db.tables import notifications, outbox
from transcare.followup_agent import followup_context
from transcare.settings import Settings
from transcare.web.app import create_app
from transitions.directory_store import SqlAlchemyDirectory
from transitions.model import Member, MemberIdentifier, StaffMember
from transitions.processor import Config, process_batch

CHROMIUM = Path("/usr/bin/chromium")
ZONE = "America/New_York"
NOW = datetime.now(UTC).replace(microsecond=0)
ADMITTED = NOW - timedelta(days=10)  # contact_facility (1 B) is long overdue: escalated to level 2
DISCHARGED = NOW - timedelta(hours=1)  # the discharge tasks are not due yet
LIVE = 15_000  # ms: the stream polls the inbox every second


@dataclass
class Site:
    base: str
    db: Database
    page: Page
    http: httpx.AsyncClient
    shots: Path

    async def open_inbox(self, staff: str | None = "C1", anchor: str = "") -> None:
        query = f"?staff={staff}" if staff else ""
        await self.page.goto(f"{self.base}/inbox{query}{anchor}")
        await expect(self.page.locator("body[data-ready='1']")).to_have_count(1)

    def card(self, task_id: str, where: str = "#tasks") -> Locator:
        return self.page.locator(f"{where} li.task[data-task='{task_id}']")

    async def tasks(self, **where: Any) -> list[Task]:
        found = await self.db.run(lambda c: find_tasks(c, limit=1000))
        return [t for t in found if all(getattr(t, k) == v for k, v in where.items())]

    async def task(self, task_type: str) -> Task:
        (found,) = await self.tasks(type=task_type)
        return found


async def _fill(db: Database, ctx: FollowupContext) -> None:
    """The roster member M1 (coordinator C1), the staff, and the tasks of one inpatient stay."""
    directory = SqlAlchemyDirectory(db, lambda: NOW)
    await directory.upsert_members([
        Member("M1", "DOE", "JANE", dt.date(1960, 1, 2), "F", "5551234567", "12345",
               (MemberIdentifier("1001", "GENHOSP"),), "low", "C1")])
    await directory.upsert_staff([
        StaffMember("C1", "Coord One", "care_coordinator", "north", "S1", "C2"),
        StaffMember("C2", "Coord Two", "care_coordinator", "north", "S1", "C1"),
        StaffMember("S1", "Sup", "supervisor", "north", "PM"),
        StaffMember("PM", "Manager", "program_manager"),
    ])
    events = await _transitions(db, [
        adt("A01", "p1", patient_class="I", visit="V1", at=ADMITTED, admitted_at=ADMITTED),
        adt("A03", "p2", patient_class="I", visit="V1", at=DISCHARGED, admitted_at=ADMITTED,
            discharged_at=DISCHARGED, disposition="01")])
    await db.write(lambda c: plan_batch(c, events, ctx, NOW))
    await db.write(lambda c: fire_due_steps(c, ctx, NOW))


async def _transitions(db: Database, events: Sequence[AdtEvent]) -> list[EpisodeEvent]:
    """ADT events through the transitions processor; the episode events it published."""
    def run(conn: Any) -> list[EpisodeEvent]:
        process_batch(conn, events, Config(), NOW)
        rows = conn.execute(select(outbox.c.payload).where(
            outbox.c.topic == "transitions.episodes.v1").order_by(outbox.c.id))
        return [EpisodeEvent.model_validate_json(p) for (p,) in rows]
    return await db.write(run)


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    return server, task, sock


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (Debian's chromium package)")
    url = f"sqlite:///{tmp_path / 'transcare.db'}"
    settings = Settings(data_dir=tmp_path, database_url=url, program_time_zone=ZONE)
    await migrate(settings)
    db = open_database(url)
    await _fill(db, followup_context(settings))
    server, serving, sock = await _serve(create_app(settings))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                                locale="en-US", timezone_id=ZONE)
            context.set_default_timeout(10_000)
            page = await context.new_page()
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                yield Site(base, db, page, http, tmp_path)
            await context.close()
            await browser.close()
    finally:
        server.should_exit = True
        await serving
        sock.close()
        await db.dispose()


def _local(at: datetime) -> datetime:
    return at.astimezone(ZoneInfo(ZONE))


async def test_the_inbox_lists_my_tasks_by_due_time_with_local_due_times(site: Site) -> None:
    mine = sorted(await site.tasks(assignee_id="C1", status="open"), key=lambda t: (t.due_at, t.id))
    assert len(mine) >= 4
    await site.open_inbox("C1")
    cards = site.page.locator("#tasks > li.task")
    await expect(cards).to_have_count(len(mine))
    assert [await c.get_attribute("data-task") for c in await cards.all()] == [t.id for t in mine]
    for t in mine:
        due = _local(t.due_at)
        text = await site.card(t.id).locator(".due time").inner_text()
        assert f"{due:%b} {due.day}," in text and f"{due.hour % 12 or 12}:{due:%M}" in text, text
        assert ("EDT" in text or "EST" in text), text
    late = await site.task("contact_facility")
    await expect(site.card(late.id)).to_have_class("task late")
    await expect(site.card(late.id).locator(".badge.overdue")).to_have_text("Overdue")
    await expect(site.card(late.id).locator(".badge.esc")).to_have_text("Escalated L2")
    await expect(site.card(late.id).locator(".badge.prio-normal")).to_have_text("normal priority")
    await expect(site.page.locator("#list-title")).to_have_text(f"My tasks ({len(mine)})")
    await site.page.screenshot(path=str(site.shots / "inbox.png"), full_page=True)
    await site.open_inbox(None)  # who I am is remembered
    await expect(site.page.locator("#staff")).to_have_value("C1")
    await expect(cards).to_have_count(len(mine))


async def test_claim_changes_the_status_on_screen_and_in_the_database(site: Site) -> None:
    contact = await site.task("post_discharge_contact")
    await site.open_inbox("C1")
    card = site.card(contact.id)
    await card.get_by_role("button", name="Claim").click()
    await expect(card).to_have_attribute("data-status", "claimed")
    await expect(card.locator(".badge.st-claimed")).to_have_text("claimed")
    await expect(card.get_by_role("button", name="Claimed")).to_be_disabled()
    await expect(site.page.locator("#status")).to_have_text(f"Claimed: {contact.title}")
    (after,) = await site.tasks(id=contact.id)
    assert (after.status, after.assignee_id) == ("claimed", "C1")
    actions = [(h["action"], h["actor"]) for h in await site.db.run(lambda c: history(c, contact.id))]
    assert actions[-1] == ("TaskClaimed", "C1")


async def test_completing_a_contact_shows_the_api_error_then_completes_when_reached(
        site: Site) -> None:
    contact = await site.task("post_discharge_contact")
    await site.open_inbox("C1")
    card = site.card(contact.id)
    await card.get_by_role("button", name="Complete").click()
    form = card.locator("form[data-form='complete']")
    await form.get_by_label("Result").select_option("no_answer")
    await form.get_by_role("button", name="Complete task").click()
    alert = site.page.get_by_role("alert")
    await expect(alert).to_be_visible()
    await expect(alert).to_contain_text("attempts: the patient was not reached; log at least 2 attempts")
    assert (await site.tasks(id=contact.id))[0].status == "open"
    await form.get_by_label("Result").select_option("reached")
    await form.get_by_role("button", name="Complete task").click()
    await expect(card).to_have_count(0)
    await expect(alert).to_be_hidden()
    await expect(site.page.locator("#status")).to_have_text(f"Completed: {contact.title}")
    (done,) = await site.tasks(id=contact.id)
    assert done.status == "done" and [a["result"] for a in done.outcome["attempts"]] == ["reached"]
    assert done.outcome["completed_by"] == "C1"
    assert datetime.fromisoformat(done.outcome["attempts"][0]["at"]).utcoffset() is not None


async def test_scheduling_the_visit_asks_for_its_date_and_time(site: Site) -> None:
    scheduling = await site.task("schedule_follow_up_visit")
    await site.open_inbox("C1")
    card = site.card(scheduling.id)
    await card.get_by_role("button", name="Complete").click()
    form = card.locator("form[data-form='complete']")
    await expect(form.get_by_label("Result")).to_have_count(0)  # no contact attempts here
    visit = _local(NOW + timedelta(days=5)).replace(hour=10, minute=30, second=0)
    await form.get_by_label("Visit date and time").fill(f"{visit:%Y-%m-%dT%H:%M}")
    await form.get_by_role("button", name="Complete task").click()
    await expect(card).to_have_count(0)
    (done,) = await site.tasks(id=scheduling.id)
    assert datetime.fromisoformat(done.outcome["visit_at"]) == visit
    reminder = await site.task("appointment_reminder")  # made by the visit, now in my inbox
    await expect(site.card(reminder.id)).to_be_visible()


async def test_reassign_to_another_coordinator(site: Site) -> None:
    contact = await site.task("post_discharge_contact")
    await site.open_inbox("C1")
    card = site.card(contact.id)
    await card.get_by_role("button", name="Reassign").click()
    form = card.locator("form[data-form='reassign']")
    await form.get_by_label("To (staff id)").fill("C2")
    await form.get_by_label("Reason").fill("covering the north team")
    await form.get_by_role("button", name="Reassign task").click()
    await expect(card).to_have_count(0)
    await expect(site.page.locator("#status")).to_have_text(f"Reassigned to C2: {contact.title}")
    (moved,) = await site.tasks(id=contact.id)
    assert moved.assignee_id == "C2"
    last = (await site.db.run(lambda c: history(c, contact.id)))[-1]
    assert (last["action"], last["actor"], last["detail"]["reason"]) == (
        "TaskReassigned", "C1", "covering the north team")
    await site.page.get_by_label("Staff id").fill("C2")  # C2 opens their own inbox
    await site.page.get_by_role("button", name="Open inbox").click()
    await expect(site.card(contact.id)).to_be_visible()
    await expect(site.page.locator("#tasks > li.task")).to_have_count(1)
    assert "staff=C2" in site.page.url


async def test_the_timeline_panel_shows_the_episode_lines(site: Site) -> None:
    contact = await site.task("post_discharge_contact")
    episode = (await site.http.get(f"/api/episodes/{contact.episode_id}")).json()
    assert len(episode["timeline"]) >= 3
    await site.open_inbox("C1")
    await site.card(contact.id).get_by_role("button", name="Timeline").click()
    panel = site.page.get_by_role("region", name="Episode timeline: inpatient at GENHOSP")
    await expect(panel).to_be_visible()
    lines = panel.locator("#timeline > li")
    await expect(lines).to_have_count(len(episode["timeline"]))
    for n, line in enumerate(episode["timeline"]):
        await expect(lines.nth(n)).to_contain_text(line["summary"])
        await expect(lines.nth(n)).to_contain_text(line["type"])
    await expect(site.card(contact.id)).to_have_class("task selected")
    assert site.page.url.endswith(f"#task-{contact.id}")
    for text in ("DOE", "JANE", "5551234567"):  # the page shows what the API returns: no names
        assert text not in await site.page.content()


async def test_a_task_link_opens_that_task(site: Site) -> None:
    contact = await site.task("post_discharge_contact")
    await site.open_inbox("C1", anchor=f"#task-{contact.id}")
    await expect(site.card(contact.id)).to_have_class("task selected")
    await expect(site.page.locator("#episode")).to_be_visible()
    cancelled = await site.task("discharge_planning")  # not in my list: shown as the linked task
    await site.page.evaluate(f"location.hash = 'task-{cancelled.id}'")
    linked = site.card(cancelled.id, "#linked")
    await expect(linked).to_have_attribute("data-status", "cancelled")
    await expect(linked.get_by_role("button", name="Complete")).to_be_disabled()


async def test_a_new_notification_appears_live_and_can_be_marked_read(site: Site) -> None:
    contact = await site.task("post_discharge_contact")
    await site.open_inbox("C1")
    await expect(site.page.locator("#live")).to_have_text("live")
    before = int(await site.page.locator("#unread").inner_text())
    assert before > 0  # the assignments
    await site.page.evaluate("window.stillTheSamePage = true")
    for to in ("C2", "C1"):  # the supervisor moves it away and back: C1 is told
        reply = await site.http.post(f"/api/tasks/{contact.id}/reassign",
                                     json={"by": "S1", "to": to, "reason": "balance"})
        assert reply.status_code == 200, reply.text
    note = site.page.locator("#notes-list li.note[data-kind='task_reassigned']")
    await expect(note).to_have_count(1, timeout=LIVE)
    await expect(note).to_contain_text("Reassigned to you")
    await expect(site.page.locator("#unread")).to_have_text(str(before + 1))
    assert await site.page.evaluate("window.stillTheSamePage") is True  # no reload
    await note.get_by_role("button", name="Mark read").click()
    await expect(site.page.locator("#unread")).to_have_text(str(before))
    read = await site.db.run(lambda c: c.execute(select(notifications.c.read_at).where(
        notifications.c.recipient_id == "C1", notifications.c.kind == "task_reassigned",
        notifications.c.channel == "inbox")).scalar_one())
    assert read is not None


async def test_the_supervisor_view_lists_the_teams_overdue_and_escalated_work(site: Site) -> None:
    now = datetime.now(UTC)
    late = [t for t in await site.tasks() if t.status in ("open", "claimed")
            and (t.due_at < now or t.escalation_level > 0)]
    assert [t.type for t in late] == ["contact_facility"]
    await site.open_inbox("S1")
    await expect(site.page.locator("#tasks > li.task")).to_have_count(0)  # nothing of S1's own
    await site.page.get_by_role("button", name="Team view: overdue & escalated").click()
    await expect(site.page.locator("#team")).to_have_attribute("aria-pressed", "true")
    card = site.card(late[0].id)
    await expect(site.page.locator("#tasks > li.task")).to_have_count(1)
    await expect(card).to_contain_text("assignee C1")
    await card.get_by_role("button", name="Reassign").click()
    form = card.locator("form[data-form='reassign']")
    await form.get_by_label("To (staff id)").fill("C2")
    await form.get_by_role("button", name="Reassign task").click()
    await expect(card).to_contain_text("assignee C2")
    assert (await site.tasks(id=late[0].id))[0].assignee_id == "C2"
    s1 = site.page.locator("#notes-list li.note[data-kind='task_escalated']")
    await expect(s1).to_have_count(1)  # the level-1 escalation went to S1
    await expect(s1).to_contain_text("Escalated (level")


async def test_the_ops_page_renders_and_links_to_the_inbox(site: Site) -> None:
    await site.page.goto(site.base + "/")
    await expect(site.page.get_by_role("heading", name="transcare · ADT stream")).to_be_visible()
    # the last minute's figures (or, right after start, a word that they are being measured)
    await expect(site.page.get_by_role("heading", name="Live", exact=False)).to_be_visible()
    await expect(site.page.get_by_role("heading", name="Message store")).to_be_visible()
    await site.page.get_by_role("link", name="coordinator inbox").click()
    await expect(site.page).to_have_url(site.base + "/inbox")
    await expect(site.page.get_by_role("heading", name="transcare · inbox")).to_be_visible()
