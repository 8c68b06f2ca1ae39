"""Follow-up end to end: ADT messages over MLLP, through the real broker and two worker
processes, to tasks, reminders, escalations and delivered e-mails (a real SMTP server) and
signed webhooks (a real HTTP receiver).

The program's rule file uses second-scale windows (ISO 8601 ``PT4S``) so the whole ladder runs
live: reminder at half the window, level 1 to the supervisor at the due time, level 2 to the
program manager two seconds later. Each step fires exactly once although both workers run the
scheduler.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from adt_listener.client import MllpClient
from followup.notify.signing import verify
from schemas.topics import TASKS
from tests.conftest import make_service
from tests.integration.helpers import read_events
from tests.receivers import Receiver, SmtpServer
from transcare.db.database import Database, open_database
from transitions.directory_store import SqlAlchemyDirectory
from transitions.model import Member, MemberIdentifier, StaffMember

SECRET = "test-webhook-secret"
RULES = """
extends = "default"
remove = ["post_discharge_contact"]

[[rules]]
id = "post_discharge_contact"
task_type = "post_discharge_contact"
title = "Post-discharge contact"
due = "PT4S"
roles = ["care_coordinator"]
outreach = true
outcome = "attempts"
min_attempts = 2
trigger = { event = "PatientDischarged", dispositions = ["01"] }
escalation = [
  { after = "half", action = "remind", level = 0, notify = "assignee" },
  { after = "0", action = "escalate", level = 1, notify = "supervisor" },
  { after = "PT2S", action = "escalate", level = 2, notify = "program_manager" },
]
"""


def hl7_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def messages(mrn: str, token: str, admitted: datetime, discharged: datetime) -> list[bytes]:
    pid = f"PID|1||{mrn}^^^GENHOSP^MR||DOE^JANE||19600102|F"
    pv1 = "PV1|1|I|4W^401^A^GENHOSP||||||||||||||||{v}" + "|" * 17 + "{disp}" + "|" * 8 + "{adm}|{dis}"
    a01 = [f"MSH|^~\\&|EPIC|GENHOSP|TC|HH|{hl7_time(admitted)}||ADT^A01|{token}-1|P|2.5",
           f"EVN|A01|{hl7_time(admitted)}", pid,
           pv1.format(v=f"{token}-V", disp="", adm=hl7_time(admitted), dis="")]
    a03 = [f"MSH|^~\\&|EPIC|GENHOSP|TC|HH|{hl7_time(discharged)}||ADT^A03|{token}-2|P|2.5",
           f"EVN|A03|{hl7_time(discharged)}", pid,
           pv1.format(v=f"{token}-V", disp="01", adm=hl7_time(admitted), dis=hl7_time(discharged))]
    return ["\r".join(m).encode() for m in (a01, a03)]


async def enrol(url: str, mrn: str, receiver: Receiver) -> None:
    db = open_database(url)
    try:
        directory = SqlAlchemyDirectory(db)
        await directory.upsert_members([Member(f"M-{mrn}", "DOE", "JANE", identifiers=(
            MemberIdentifier(mrn, "GENHOSP"),), coordinator_id="C1")])
        await directory.upsert_staff([
            StaffMember("C1", "Coord", "care_coordinator", "north", "S1", "C2",
                        email="c1@example.org", webhook_url=receiver.url("C1")),
            StaffMember("C2", "Backup", "care_coordinator", "north", "S1", "C1"),
            StaffMember("S1", "Sup", "supervisor", "north", "PM", email="s1@example.org"),
            StaffMember("PM", "Manager", "program_manager", email="pm@example.org")])
    finally:
        await db.dispose()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s}s")
        await asyncio.sleep(0.25)


async def rows(db: Database, sql: str) -> list[Any]:
    return await db.run(lambda c: list(c.execute(text(sql)).mappings()))


async def test_a_discharge_reaches_the_coordinator_and_slipping_work_escalates(
        tmp_path: Path, broker: Any, smtp: SmtpServer, receiver: Receiver) -> None:
    token = f"F{uuid.uuid4().hex[:6].upper()}"
    (tmp_path / "rules.toml").write_text(RULES)
    svc = make_service(
        tmp_path, broker.bootstrap, TRANSCARE_RULES_FILE=str(tmp_path / "rules.toml"),
        TRANSCARE_SMTP_HOST="127.0.0.1", TRANSCARE_SMTP_PORT=str(smtp.port),
        TRANSCARE_WEBHOOK_SECRET=SECRET, TRANSCARE_SCHEDULER_INTERVAL="0.5",
        TRANSCARE_PUBLIC_URL="https://transcare.example.org")
    await enrol(svc.database_url, token, receiver)
    db = open_database(svc.database_url)
    svc.start("worker")
    svc.start("worker", name="worker2")
    svc.start("listener")
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        client = await MllpClient.connect("127.0.0.1", svc.mllp_port, timeout=20)
        for message in messages(token, token, now - timedelta(days=2), now + timedelta(seconds=10)):
            assert (await client.send(message))[-1].code == "AA"
        await client.close()

        async def escalated_twice() -> bool:
            found = await rows(db, "SELECT escalation_level FROM tasks WHERE type = "
                                   f"'post_discharge_contact' AND member_id = 'M-{token}'")
            return bool(found) and found[0]["escalation_level"] == 2
        await until("the contact task escalated to level 2", escalated_twice)
        # the contact task's four: assigned and reminded (C1), escalated to S1, then to PM
        await until("e-mails delivered", lambda: _mailed(smtp, 4, "post_discharge_contact"))
        await until("webhooks delivered", lambda: _hooked(receiver, 2))
        await check_ladder(db, smtp, receiver, f"M-{token}")
        task_ids = {r["id"] for r in await rows(db, f"SELECT id FROM tasks WHERE member_id = 'M-{token}'")}
        published = [json.loads(r["payload"]) for r in await rows(
            db, f"SELECT payload FROM outbox WHERE topic = 'followup.tasks.v1' AND key = 'M-{token}'")]
        assert {p["task_id"] for p in published} == task_ids
        seen = await read_events(broker.bootstrap, TASKS.name, {p["event_id"] for p in published},
                                 keys={f"M-{token}".encode()})
        assert set(seen) == {p["event_id"] for p in published}  # on followup.tasks.v1
    finally:
        svc.stop_all()
        await db.dispose()


async def _mailed(smtp: SmtpServer, n: int, subject: str = "") -> bool:
    """At least ``n`` e-mails delivered (whose subject names ``subject``)."""
    return sum(subject in str(m["Subject"]) for m in smtp.mailbox.messages) >= n


async def _hooked(receiver: Receiver, n: int) -> bool:
    return len(receiver.requests) >= n


async def check_ladder(db: Database, smtp: SmtpServer, receiver: Receiver, member: str) -> None:
    (task,) = await rows(db, "SELECT id FROM tasks WHERE type = 'post_discharge_contact' "
                             f"AND member_id = '{member}'")
    steps = [r["action"] for r in await rows(
        db, f"SELECT action FROM task_history WHERE task_id = '{task['id']}' ORDER BY id")]
    assert steps == ["TaskCreated", "TaskReminded", "TaskEscalated", "TaskEscalated"]  # once each
    timeline = {r["type"] for r in await rows(db, "SELECT type FROM episode_timeline")}
    assert {"TaskCreated", "TaskReminded", "TaskEscalated"} <= timeline
    contact = [m for m in smtp.mailbox.messages if "post_discharge_contact" in str(m["Subject"])]
    to = sorted(str(m["To"]) for m in contact)
    assert to == ["c1@example.org", "c1@example.org", "pm@example.org", "s1@example.org"]
    body = "".join(str(m.get_content()) for m in contact)
    assert "DOE" not in body and "JANE" not in body and "https://transcare.example.org/inbox#task-" in body
    for headers, payload in receiver.requests:
        assert verify(SECRET, payload, headers["x-transcare-signature"], time.time())
        assert headers["idempotency-key"].startswith("n-")
    kinds = sorted(json.loads(p)["kind"] for _, p in receiver.requests
                   if json.loads(p)["task_id"] == task["id"])
    assert kinds == ["task_assigned", "task_reminder"]
