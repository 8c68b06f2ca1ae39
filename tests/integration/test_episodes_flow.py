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
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from adt_listener.client import MllpClient
from adt_listener.hl7.charset import decode_message
from adt_listener.normaliser import normalise
from schemas.adt_event import RawMessage
from schemas.topics import EPISODES
from tests.conftest import Service, make_service
from tests.integration.helpers import read_events, wait_until_settled
from transcare.db.database import open_database
from transcare.db.migrate import upgrade
from transitions.directory_store import SqlAlchemyDirectory
from transitions.model import Member, MemberIdentifier, StaffMember
from transitions.processor import Config, process_batch

EPISODE_TRIGGERS = {"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13",
                    "A21", "A22"}
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
    for n, (_, text) in enumerate(feed, 1):
        raw = RawMessage(message_id=n, sending_facility="", control_id=str(n), message_type="ADT",
                         received_at=datetime.now(UTC), charset="utf-8", text=text)
        result = normalise(b"", raw.model_dump_json().encode(), lambda _: ZoneInfo("America/New_York"))
        if result.event is not None:
            events.append(result.event)
    db = open_database(url)
    try:
        await db.write(lambda conn: process_batch(conn, events, Config(), datetime.now(UTC)))
    finally:
        await db.dispose()
    return episodes_in(tmp / "reference.db")


def episodes_in(path: Path) -> set[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return set(conn.execute("SELECT member_id, facility_key, kind, status, disposition, "
                                "coordinator_id FROM episodes"))
    finally:
        conn.close()


async def test_corpus_messages_make_the_expected_episodes_with_two_workers(
        tmp_path: Path, broker: Any, corpus: Path) -> None:
    token = f"T{uuid.uuid4().hex[:6].upper()}"
    feed, roster = corpus_feed(corpus, token)
    assert len(feed) >= 40, "the corpus should offer dozens of episode messages"
    data = tmp_path / "svc"
    data.mkdir()
    svc: Service = make_service(data, broker.bootstrap)
    await enrol(svc.database_url, roster)
    svc.start("worker")
    svc.start("worker", name="worker2")
    svc.start("listener")
    try:
        codes = await send_all(svc.mllp_port, feed)
        accepted = [(name, text) for name, text in feed if codes[name] in ("AA", "CA")]
        await wait_until_settled(data / "transcare.db")
        await wait_for_transitions_of(data / "transcare.db", token, len(accepted))
        expected = await reference(tmp_path, accepted, roster)
        assert len(expected) >= 30, f"only {len(expected)} episodes from the corpus"
        assert {"ed", "inpatient"} <= {e[2] for e in expected}
        assert {"open", "discharged"} <= {e[3] for e in expected}
        assert episodes_in(data / "transcare.db") == expected
        await outbox_drained(data / "transcare.db")
        ids = {json.loads(r)["event_id"] for r in outbox_payloads(data / "transcare.db")}
        keys = {f"M-{m.identifiers[0].value}".encode() for m in roster}
        seen = await read_events(broker.bootstrap, EPISODES.name, ids, keys=keys)
        assert set(seen) == ids
    finally:
        svc.stop_all()


async def wait_for_transitions_of(db: Path, token: str, expected: int,
                                  timeout_s: float = 120.0) -> None:
    """Wait until transitions handled ``expected`` of this test's events (MSH-10 carries the
    token; the shared broker also replays earlier tests' events to this consumer group)."""
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db)
        try:
            done = conn.execute("SELECT count(*) FROM processed_events WHERE event_id LIKE ?",
                                (f"%|{token}-%",)).fetchone()[0]
        finally:
            conn.close()
        if done >= expected:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"transitions handled {done} of {expected} events in {timeout_s}s")


async def outbox_drained(db: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db)
        try:
            left = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]
        finally:
            conn.close()
        if left == 0:
            return
        await asyncio.sleep(0.25)
    raise AssertionError("the outbox was not published")


def outbox_payloads(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT payload FROM outbox ORDER BY id")]
    finally:
        conn.close()

