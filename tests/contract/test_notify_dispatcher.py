"""Contract of notification delivery, on SQLite and PostgreSQL, against real servers.

A real SMTP server (aiosmtpd) and a real HTTP receiver (Starlette under uvicorn, in-process)
receive what the dispatcher sends. Time moves by an injected clock; nothing sleeps except
while a real server answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from structlog.testing import capture_logs

from followup.notify.content import Notice, task_link
from followup.notify.dispatcher import (
    Dispatcher,
    create_notifications,
    delivery_counts,
    delivery_problems,
    inbox,
    mark_read,
    notification_id,
)
from followup.notify.senders import Sender, SmtpSender, WebhookSender
from followup.notify.signing import verify
from tests.receivers import Receiver, SmtpServer
from transcare.db.database import Database
from transcare.db.tables import notifications, staff

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
SECRET = "whsec-contract"
FROM = "transcare@example.org"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
async def senders(smtp: SmtpServer) -> AsyncIterator[dict[str, Sender]]:
    webhook = WebhookSender(SECRET, timeout_s=5)
    yield {"email": SmtpSender("127.0.0.1", smtp.port, FROM, timeout_s=5), "webhook": webhook}
    await webhook.aclose()


@pytest.fixture
async def world(database: Database, receiver: Receiver) -> Clock:
    """Staff with and without addresses, and the clock at T0."""
    people = [("s-both", "both@example.org", receiver.url("s-both")),
              ("s-mail", "mail@example.org", ""), ("s-hook", "", receiver.url("s-hook")),
              ("s-none", "", ""), ("s-refuse", "refuse@example.org",
                                   receiver.url("s-refuse").replace("/hook/", "/gone/"))]
    rows = [{"staff_id": sid, "name": f"Name {sid}", "role": "care_coordinator", "email": mail,
             "webhook_url": url, "updated_at": T0} for sid, mail, url in people]
    await database.run(lambda c: c.execute(insert(staff), rows))
    return Clock()


def notice(n: int = 1, kind: str = "task_escalated") -> Notice:
    return Notice(kind=kind, task_id=f"tk-{n}", episode_id="ep-1",  # type: ignore[arg-type]
                  task_type="post_discharge_contact", title="Post-discharge contact",
                  due_at=datetime(2026, 11, 25, 22, 0, tzinfo=UTC), escalation_level=1,
                  link=task_link("https://tc.example.org", f"tk-{n}"),
                  time_zone="America/New_York", event_id=f"ev-{n}")


async def create(db: Database, clock: Clock, *items: tuple[Notice, str, tuple[str, ...]]) -> int:
    return await db.write(lambda c: create_notifications(c, list(items), clock()))


async def rows(db: Database) -> dict[tuple[str, str], Any]:
    """Rows by (recipient, channel) (each test makes one notice per recipient and channel)."""
    found = await db.run(lambda c: c.execute(select(notifications)).mappings().all())
    return {(r["recipient_id"], r["channel"]): r for r in found}


def dispatcher(db: Database, senders: dict[str, Sender], clock: Callable[[], datetime],
               **options: Any) -> Dispatcher:
    return Dispatcher(db, senders, clock=clock, **options)


# --- the tests -----------------------------------------------------------------------------------

async def test_email_delivered_with_subject_and_body(
        database: Database, world: Clock, senders: dict[str, Sender], smtp: SmtpServer) -> None:
    await create(database, world, (notice(), "s-mail", ("inbox", "email")))
    assert await dispatcher(database, senders, world).dispatch_once() == 1
    [msg] = smtp.mailbox.messages
    nid = notification_id("ev-1", "s-mail", "email")
    assert msg["Subject"] == ("[transcare] Task due 2026-11-25 17:00 EST: post_discharge_contact "
                              "(escalated, level 1)")
    assert msg["To"] == "mail@example.org" and msg["From"] == FROM
    assert msg["Message-ID"] == f"<{nid}@transcare>"
    body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    for text in (nid, "tk-1", "ep-1", "post_discharge_contact", "2026-11-25 17:00 EST",
                 "https://tc.example.org/inbox#task-tk-1"):
        assert text in body
    assert "Name s-mail" not in msg.as_string()
    got = await rows(database)
    email = got[("s-mail", "email")]
    assert (email["status"], email["attempts"], email["delivered_at"]) == ("delivered", 1, T0)
    assert got[("s-mail", "inbox")]["status"] == "delivered"  # never claimed by the dispatcher


async def test_webhook_delivered_signed_with_idempotency_key(
        database: Database, world: Clock, senders: dict[str, Sender], receiver: Receiver) -> None:
    await create(database, world, (notice(), "s-hook", ("webhook",)))
    assert await dispatcher(database, senders, world).dispatch_once() == 1
    [(headers, body)] = receiver.requests
    assert verify(SECRET, body, headers["x-transcare-signature"], now=time.time())
    assert not verify("another secret", body, headers["x-transcare-signature"], now=time.time())
    assert headers["idempotency-key"] == notification_id("ev-1", "s-hook", "webhook")
    assert headers["content-type"] == "application/json" and headers["user-agent"] == "transcare"
    data = json.loads(body)
    assert (data["task_id"], data["due_at"], data["notification_id"]) == (
        "tk-1", "2026-11-25T22:00:00Z", headers["idempotency-key"])
    assert (await rows(database))[("s-hook", "webhook")]["status"] == "delivered"


async def test_500_then_200_is_failed_then_delivered_on_the_next_attempt(
        database: Database, world: Clock, senders: dict[str, Sender], receiver: Receiver) -> None:
    await create(database, world, (notice(), "s-hook", ("webhook",)))
    receiver.fail_next = 1
    d = dispatcher(database, senders, world)
    assert await d.dispatch_once() == 1
    row = (await rows(database))[("s-hook", "webhook")]
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, "webhook: HTTP 500")
    assert T0 + timedelta(seconds=10) <= row["next_attempt_at"] < T0 + timedelta(seconds=12)
    assert await d.dispatch_once() == 0  # not due yet
    world.advance(seconds=12)
    assert await d.dispatch_once() == 1
    row = (await rows(database))[("s-hook", "webhook")]
    assert (row["status"], row["attempts"], row["delivered_at"]) == ("delivered", 2, world.now)
    assert len(receiver.keys()) == 2 and len(set(receiver.keys())) == 1  # same idempotency key


async def test_smtp_down_email_backs_off_while_webhooks_are_delivered(
        database: Database, world: Clock, senders: dict[str, Sender], smtp: SmtpServer,
        receiver: Receiver) -> None:
    smtp.stop()
    await create(database, world, (notice(), "s-both", ("email", "webhook")))
    with capture_logs() as logs:
        assert await dispatcher(database, senders, world).dispatch_once() == 2
    assert {e["event"] for e in logs} == {"notify.delivered", "notify.failed"}
    assert all(e["notification_id"].startswith("n-") and e["attempt"] == 1 for e in logs)
    text = repr(logs)  # ids, channel, attempt, reason: no address, URL or content
    assert "example.org" not in text and "127.0.0.1" not in text and "post_discharge" not in text
    got = await rows(database)
    email, hook = got[("s-both", "email")], got[("s-both", "webhook")]
    assert hook["status"] == "delivered" and len(receiver.requests) == 1
    assert (email["status"], email["attempts"]) == ("failed", 1)
    assert email["last_error"].startswith("email: cannot reach the SMTP server")
    assert email["next_attempt_at"] >= T0 + timedelta(seconds=10)
    [problem] = await database.run(lambda c: delivery_problems(c))
    assert (problem["channel"], problem["status"]) == ("email", "failed")


async def test_a_hanging_smtp_server_does_not_delay_webhooks(
        database: Database, world: Clock, senders: dict[str, Sender], receiver: Receiver) -> None:
    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept and never answer (no SMTP greeting)
        writer.close()

    hole = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    stuck = {**senders, "email": SmtpSender("127.0.0.1", port, FROM, timeout_s=30)}
    await create(database, world, (notice(), "s-both", ("email", "webhook")))
    run = asyncio.create_task(dispatcher(database, stuck, world, send_timeout_s=1.5).dispatch_once())
    for _ in range(100):  # the webhook outcome is committed while the e-mail still hangs
        got = await rows(database)
        if got[("s-both", "webhook")]["status"] == "delivered":
            break
        await asyncio.sleep(0.01)
    assert got[("s-both", "webhook")]["status"] == "delivered"
    assert got[("s-both", "email")]["status"] == "pending" and not run.done()
    assert await run == 2
    email = (await rows(database))[("s-both", "email")]
    assert (email["status"], email["last_error"]) == ("failed", "email: no answer within 1.5s")
    hole.close()


async def test_missing_address_or_refusal_is_dead_with_a_reason(
        database: Database, world: Clock, senders: dict[str, Sender], smtp: SmtpServer) -> None:
    await create(database, world, (notice(), "s-none", ("email", "webhook")),
                 (notice(), "s-refuse", ("email", "webhook")), (notice(), "s-ghost", ("email",)))
    assert await dispatcher(database, senders, world).dispatch_once() == 5
    got = await rows(database)
    assert {key: (r["status"], r["last_error"]) for key, r in got.items()} == {
        ("s-none", "email"): ("dead", "email: no e-mail address for recipient"),
        ("s-none", "webhook"): ("dead", "webhook: no webhook URL for recipient"),
        ("s-refuse", "email"): ("dead", "email: recipient refused (550)"),
        ("s-refuse", "webhook"): ("dead", "webhook: HTTP 404"),
        ("s-ghost", "email"): ("dead", "email: recipient not in the staff directory"),
    }
    assert all(r["next_attempt_at"] is None and r["attempts"] == 1 for r in got.values())
    assert smtp.mailbox.messages == []
    world.advance(hours=10)
    assert await dispatcher(database, senders, world).dispatch_once() == 0


async def test_unconfigured_channel_is_failed_and_retried(
        database: Database, world: Clock, receiver: Receiver) -> None:
    await create(database, world, (notice(), "s-both", ("email",)))
    assert await dispatcher(database, {}, world).dispatch_once() == 1
    row = (await rows(database))[("s-both", "email")]
    assert (row["status"], row["last_error"]) == ("failed", "email: channel not configured")


async def test_an_unconfigured_channel_is_one_warning_not_one_a_try(
        database: Database, world: Clock, receiver: Receiver) -> None:
    """Regression: without SMTP, every e-mail notification's every try logged a warning
    (126 lines in the first 40 s of `make up` with the example feed)."""
    await create(database, world, (notice(1), "s-both", ("email",)), (notice(2), "s-both", ("email",)))
    d = dispatcher(database, {}, world)
    with capture_logs() as logs:
        assert await d.dispatch_once() == 2
        world.advance(minutes=1)
        assert await d.dispatch_once() == 2
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["channel"], e["setting"]) for e in warnings] == [
        ("notify.channel_not_configured", "email", "TRANSCARE_SMTP_HOST")]
    assert sum(e["event"] == "notify.failed" for e in logs) == 4  # each try, at debug
    assert {r["attempts"] for r in (await rows(database)).values()} == {2}


async def test_eighth_failure_is_dead(
        database: Database, world: Clock, senders: dict[str, Sender], receiver: Receiver) -> None:
    await create(database, world, (notice(), "s-hook", ("webhook",)))
    receiver.fail_next, d = 100, dispatcher(database, senders, world)
    for _ in range(8):
        assert await d.dispatch_once() == 1
        world.advance(hours=3)
    row = (await rows(database))[("s-hook", "webhook")]
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("dead", 8, None)
    assert await d.dispatch_once() == 0 and len(receiver.requests) == 8


async def test_two_dispatchers_deliver_each_notification_exactly_once(
        database: Database, world: Clock, senders: dict[str, Sender], smtp: SmtpServer,
        receiver: Receiver) -> None:
    await create(database, world, *[(notice(n), "s-both", ("email", "webhook")) for n in range(30)])
    claimed: dict[str, int] = {"a": 0, "b": 0}

    async def drain(name: str) -> None:
        d = dispatcher(database, senders, world, holder=name, batch=7)
        while n := await d.dispatch_once():
            claimed[name] += n

    await asyncio.gather(drain("a"), drain("b"))
    assert claimed["a"] + claimed["b"] == 60 and claimed["a"] > 0 and claimed["b"] > 0
    assert len(receiver.keys()) == 30 and len(set(receiver.keys())) == 30
    ids = [m["Message-ID"] for m in smtp.mailbox.messages]
    assert len(ids) == 30 and len(set(ids)) == 30
    counts = await database.run(delivery_counts)
    assert counts == {("email", "delivered"): 30, ("webhook", "delivered"): 30}


async def test_create_notifications_is_idempotent(database: Database, world: Clock) -> None:
    items = [(notice(1), "s-both", ("inbox", "email", "webhook")), (notice(2), "s-mail", ("inbox",))]
    assert await create(database, world, *items) == 4
    world.advance(minutes=5)
    assert await create(database, world, *items) == 0
    got = await rows(database)
    assert len(got) == 4
    assert got[("s-both", "email")]["next_attempt_at"] == T0
    assert (got[("s-both", "inbox")]["status"], got[("s-both", "inbox")]["delivered_at"]) == (
        "delivered", T0)
    assert got[("s-both", "webhook")]["payload"]["notification_id"] == got[("s-both", "webhook")]["id"]
    with pytest.raises(ValueError, match="channel"):
        await create(database, world, (notice(3), "s-both", ("sms",)))


async def test_inbox_and_mark_read(database: Database, world: Clock) -> None:
    await create(database, world, (notice(1), "s-both", ("inbox", "email")))
    world.advance(minutes=1)
    await create(database, world, (notice(2, "task_reminder"), "s-both", ("inbox",)),
                 (notice(3), "s-mail", ("inbox",)))
    items = await database.run(lambda c: inbox(c, "s-both", limit=10))
    assert [i["task_id"] for i in items] == ["tk-2", "tk-1"]
    assert items[0]["kind"] == "task_reminder" and items[0]["read_at"] is None
    other = notification_id("ev-3", "s-mail", "inbox")
    changed = await database.write(lambda c: mark_read(c, "s-both", [items[1]["id"], other],
                                                        world()))
    assert changed == 1
    unread = await database.run(lambda c: inbox(c, "s-both", limit=10, unread_only=True))
    assert [i["task_id"] for i in unread] == ["tk-2"]
    assert len(await database.run(lambda c: inbox(c, "s-mail", unread_only=True))) == 1


async def test_run_delivers_on_wake_and_stops(
        database: Database, world: Clock, senders: dict[str, Sender], receiver: Receiver) -> None:
    d, stop = dispatcher(database, senders, world, poll_s=30), asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    await create(database, world, (notice(), "s-hook", ("webhook",)))
    d.wake()
    await _stop_after_a_request(receiver, stop, task)
    assert len(receiver.requests) == 1
    assert (await rows(database))[("s-hook", "webhook")]["status"] == "delivered"


async def test_a_wake_for_one_channel_leaves_the_others_to_their_poll(
        database: Database, world: Clock, senders: dict[str, Sender], receiver: Receiver) -> None:
    d, stop = dispatcher(database, senders, world, poll_s=30), asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    await asyncio.sleep(0.05)  # the loops' first claims: nothing yet
    await create(database, world, (notice(), "s-hook", ("webhook",)))
    d.wake(["email"])
    await asyncio.sleep(0.3)
    assert receiver.requests == []  # the webhook loop still waits for its poll
    d.wake(["webhook"])
    await _stop_after_a_request(receiver, stop, task)
    assert len(receiver.requests) == 1


async def _stop_after_a_request(receiver: Receiver, stop: asyncio.Event,
                                task: asyncio.Task[None]) -> None:
    """Wait (up to 3 s) for the receiver's first request, then stop the dispatcher."""
    for _ in range(300):
        if receiver.requests:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
