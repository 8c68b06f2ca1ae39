"""Episodes end to end: real corpus messages (patient identifiers rewritten to an enrolled
roster) over MLLP, through the real broker and two worker processes in one consumer group,
into episodes in the database and events on ``transitions.episodes.v1``.

The expected episodes come from the same messages run in-process through the pure pipeline
(normalise, then the transitions processor on a scratch database): the distributed path
(partitions, two workers, the outbox) must end exactly where the reference ends.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from adt_listener.client import MllpClient
from adt_listener.hl7.charset import decode_message
from adt_listener.normaliser import normalise
from schemas.adt_event import RawMessage
from schemas.topics import EPISODES
from tests.conftest import Service, make_service
from tests.integration.helpers import read_events
from transcare.db.database import Database, open_database
from transcare.db.migrate import upgrade
from transcare.settings import Settings
from transitions.directory_store import SqlAlchemyDirectory
from transitions.model import Member, MemberIdentifier, StaffMember
from transitions.processor import Config, process_batch

EPISODE_TRIGGERS = {"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13",
                    "A21", "A22"}
POSTGRES_ENV = "TRANSCARE_TEST_POSTGRES_URL"
STAFF = [StaffMember("C1", "Coord One", "care_coordinator", "north", "S1", "C2"),
         StaffMember("C2", "Coord Two", "care_coordinator", "north", "S1", "C1"),
         StaffMember("S1", "Sup One", "supervisor", "north")]


def _fields(segment: str) -> list[str]:
    return segment.split("|")


def rewrite(text: str, mrn: str, control_id: str) -> str:
    """The message with PID-3 replaced by ``mrn^^^GENHOSP^MR``, MSH-10 by ``control_id`` and
    PV1-19 prefixed with ``mrn`` (corpus files reuse visit numbers for different patients)."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    out = []
    for line in lines:
        f = _fields(line)
        if line.startswith("MSH") and len(f) > 9:
            f[9] = control_id
        if line.startswith("PID"):
            f += [""] * max(0, 4 - len(f))
            f[3] = f"{mrn}^^^GENHOSP^MR"
        if line.startswith("PV1") and len(f) > 19 and f[19]:
            f[19] = f"{mrn}-{f[19]}"
        out.append("|".join(f))
    return "\r".join(out)


def _trigger(text: str) -> str:
    msh = _fields(text.split("\r", 1)[0].split("\n", 1)[0])
    parts = msh[8].split("^") if len(msh) > 8 else []
    return parts[1] if len(parts) > 1 and parts[0] == "ADT" else ""


def corpus_feed(corpus: Path, token: str) -> tuple[list[tuple[str, str]], list[Member]]:
    """(file name, rewritten message) for every episode-relevant corpus ADT message that has a
    PID, and a roster enrolling each message's (rewritten) patient."""
    feed, roster = [], []
    for n, path in enumerate(sorted((corpus / "msgs").glob("*.hl7"))):
        text = decode_message(path.read_bytes())[0]
        if _trigger(text) not in EPISODE_TRIGGERS or "\rPID|" not in text.replace("\n", "\r"):
            continue
        mrn = f"{token}{n:03d}"
        feed.append((path.name, rewrite(text, mrn, f"{token}-{n}")))
        roster.append(Member(f"M-{mrn}", identifiers=(MemberIdentifier(mrn, "GENHOSP"),),
                             coordinator_id="C1"))
    return feed, roster


async def enrol(database_url: str, roster: list[Member]) -> None:
    db = open_database(database_url)
    try:
        directory = SqlAlchemyDirectory(db)
        await directory.upsert_members(roster)
        await directory.upsert_staff(STAFF)
    finally:
        await db.dispose()


async def send_all(port: int, feed: list[tuple[str, str]]) -> dict[str, str]:
    client = await MllpClient.connect("127.0.0.1", port, timeout=20)
    codes = {}
    try:
        for name, text in feed:
            codes[name] = (await client.send(text.encode("utf-8")))[-1].code
    finally:
        await client.close()
    return codes


async def reference(tmp: Path, feed: list[tuple[str, str]], roster: list[Member]) -> set[tuple[Any, ...]]:
    """The episodes the pure pipeline makes from the same messages, in the same order."""
    url = f"sqlite:///{tmp / 'reference.db'}"
    await asyncio.to_thread(upgrade, url)
    await enrol(url, roster)
    events = []
    for n, (_, message) in enumerate(feed, 1):
        raw = RawMessage(message_id=n, sending_facility="", control_id=str(n), message_type="ADT",
                         received_at=datetime.now(UTC), charset="utf-8", text=message)
        result = normalise(b"", raw.model_dump_json().encode(), lambda _: ZoneInfo("America/New_York"))
        if result.event is not None:
            events.append(result.event)
    db = open_database(url)
    try:
        await db.write(lambda conn: process_batch(conn, events, Config(), datetime.now(UTC)))
        return await episodes_in(db)
    finally:
        await db.dispose()


async def query(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return await db.run(lambda conn: [tuple(r) for r in conn.execute(text(sql), params)])


async def episodes_in(db: Database) -> set[tuple[Any, ...]]:
    return set(await query(db, "SELECT member_id, facility_key, kind, status, disposition, "
                               "coordinator_id FROM episodes"))


async def poll(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout_s}s")
        await asyncio.sleep(0.25)


async def settled(db: Database) -> None:
    """Every stored message has an outcome (normalised or dead-lettered); ``db`` is the
    message store (on SQLite a file of its own beside the database)."""
    async def check() -> bool:
        return (await query(db, "SELECT count(*) FROM messages WHERE status = 'accepted'"))[0][0] == 0
    await poll("messages still not processed", check)


async def transitions_done(db: Database, pattern: str, expected: int) -> None:
    """Wait until transitions handled ``expected`` events whose id matches ``pattern`` (MSH-10
    carries the test's token: the shared broker also replays earlier tests' events)."""
    async def check() -> bool:
        rows = await query(db, "SELECT count(*) FROM processed_events WHERE event_id LIKE :p",
                           p=pattern)
        return int(rows[0][0]) >= expected
    await poll(f"transitions did not handle {expected} events", check)


async def outbox_drained(db: Database) -> None:
    async def check() -> bool:
        rows = await query(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return int(rows[0][0]) == 0
    await poll("the outbox was not published", check, 60.0)


async def test_corpus_messages_make_the_expected_episodes_with_two_workers(
        tmp_path: Path, broker: Any, corpus: Path, empty_database_url: str) -> None:
    database_url = empty_database_url
    token = f"T{uuid.uuid4().hex[:6].upper()}"
    feed, roster = corpus_feed(corpus, token)
    assert len(feed) >= 40, "the corpus should offer dozens of episode messages"
    data = tmp_path / "svc"
    data.mkdir(exist_ok=True)
    svc: Service = make_service(data, broker.bootstrap, TRANSCARE_DATABASE_URL=database_url)
    await enrol(database_url, roster)
    db = open_database(database_url)
    messages = open_database(Settings(database_url=database_url).effective_message_store_url)
    svc.start("worker")
    svc.start("worker", name="worker2")
    svc.start("listener")
    try:
        codes = await send_all(svc.mllp_port, feed)
        accepted = [(name, text) for name, text in feed if codes[name] in ("AA", "CA")]
        await settled(messages)
        await transitions_done(db, f"%|{token}-%", len(accepted))
        expected = await reference(tmp_path, accepted, roster)
        assert len(expected) >= 30, f"only {len(expected)} episodes from the corpus"
        assert {"ed", "inpatient"} <= {e[2] for e in expected}
        assert {"open", "discharged"} <= {e[3] for e in expected}
        assert await episodes_in(db) == expected
        await outbox_drained(db)
        ids = {json.loads(r[0])["event_id"] for r in await query(
            db, "SELECT payload FROM outbox WHERE topic = 'transitions.episodes.v1'")}
        keys = {f"M-{m.identifiers[0].value}".encode() for m in roster}
        seen = await read_events(broker.bootstrap, EPISODES.name, ids, keys=keys)
        assert set(seen) == ids
        await replay_changes_nothing(svc, db, messages, token, roster)
    finally:
        svc.stop_all()
        await db.dispose()
        await messages.dispose()


# What the transitions stage owns. The follow-up stage runs meanwhile (its scheduler fires the
# ladders of these old, overdue tasks as time passes), so its timeline lines and outbox rows
# are left out; its own replay guarantee is tested in tests/contract/test_followup_service.py.
EPISODE_QUERIES = {
    "episodes": "SELECT * FROM episodes", "episode_visits": "SELECT * FROM episode_visits",
    "episode_flags": "SELECT * FROM episode_flags", "match_reviews": "SELECT * FROM match_reviews",
    "members": "SELECT * FROM members", "member_identifiers": "SELECT * FROM member_identifiers",
    "episode_timeline": "SELECT * FROM episode_timeline WHERE type NOT LIKE 'Task%'",
    "outbox": "SELECT * FROM outbox WHERE topic = 'transitions.episodes.v1'",
}


async def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {name: sorted(await query(db, sql), key=repr) for name, sql in EPISODE_QUERIES.items()}


async def replay_changes_nothing(svc: Service, db: Database, messages: Database, token: str,
                                 roster: list[Member]) -> None:
    """``transcare replay`` publishes every stored message again; once the worker has been
    through all of them (a sentinel A05 per patient, behind the replayed messages on the
    patient's partition, has been handled), the episode tables are exactly as before."""
    before = await dump(db)
    done = subprocess.run([sys.executable, "-m", "transcare.cli", "replay"], env=svc.env,
                          capture_output=True, text=True, check=True)
    assert "queued for publishing again" in done.stdout
    await settled(messages)
    sentinels = [(m.member_id, sentinel(m.identifiers[0].value, f"{token}-s{n}"))
                 for n, m in enumerate(roster)]
    codes = await send_all(svc.mllp_port, sentinels)
    assert set(codes.values()) == {"AA"}
    await transitions_done(db, f"%|{token}-s%", len(sentinels))
    assert await dump(db) == before


def sentinel(mrn: str, control_id: str) -> str:
    """A pre-admission (A05): handled, recorded in processed_events, changes no episode."""
    return "\r".join([
        f"MSH|^~\\&|SENTINEL|GENHOSP|TC|TC|20260401083000||ADT^A05^ADT_A05|{control_id}|P|2.5",
        "EVN|A05|20260401083000", f"PID|1||{mrn}^^^GENHOSP^MR||SENTINEL^PAT", "PV1|1|P"])


