"""Responder: frame in, message(s) committed through the StoreWriter, ACK frame(s) out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from adt_listener.acknowledge import Responder
from adt_listener.hl7.er7 import Message
from adt_listener.hl7.framing import Frame, FrameTooLarge
from adt_listener.store import ACCEPTED, REJECTED
from adt_listener.writer import StoreWriter
from tests.fakes import FakeMessageStore
from transcare.settings import FacilitySettings

PEER = "10.0.0.1"
T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def adt(cid: str = "C1", *, facility: str = "WARD", acc: str = "", app: str = "",
        pid: str = "PID|1||123^^^HOSP^MR") -> bytes:
    """An ADT^A01; MSH-15/16 set enhanced mode when given."""
    msh = (f"MSH|^~\\&|HIS|{facility}|TC|HUB|20240101120000||ADT^A01^ADT_A01|{cid}|P|2.5|||"
           f"{acc}|{app}")
    return f"{msh.rstrip('|')}\rEVN|A01|20240101120000\r{pid}\r".encode()


def ticking_clock() -> Callable[[], datetime]:
    """A clock one second further on each call, so a rebuilt ACK would differ in MSH-7."""
    now = [T0]

    def tick() -> datetime:
        now[0] += timedelta(seconds=1)
        return now[0]
    return tick


@pytest.fixture
def store() -> FakeMessageStore:
    return FakeMessageStore()


@pytest.fixture
async def writer(store: FakeMessageStore) -> AsyncIterator[StoreWriter]:
    w = StoreWriter(store)
    w.start()
    yield w
    await w.stop()


def responder(writer: StoreWriter, require_known: bool = False, **facilities: tuple[str, ...]
              ) -> Responder:
    policy = {name: FacilitySettings(name, allowed_sources=src)
              for name, src in facilities.items()}
    return Responder(writer, policy, require_known, clock=ticking_clock())


@pytest.fixture
def plain(writer: StoreWriter) -> Responder:
    return responder(writer)


def parse(reply: bytes) -> Message:
    return Message(reply.decode())


def msa(reply: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of one ACK frame."""
    m = parse(reply)
    return m.get("MSA", 1), m.get("MSA", 2)


# -- original mode ----------------------------------------------------------------------------


async def test_original_mode_aa_is_stored_accepted(plain: Responder,
                                                   store: FakeMessageStore) -> None:
    (reply,) = await plain.respond(Frame(adt("C1")), PEER)
    ack = parse(reply)
    assert msa(reply) == ("AA", "C1")
    assert (ack.get("MSH", 5), ack.get("MSH", 6), ack.get("MSH", 9, 2)) == ("HIS", "WARD", "A01")
    (row,) = await store.find()
    assert (row.status, row.ack_code, row.control_id, row.reason) == (ACCEPTED, "AA", "C1", None)
    (item,) = store.raw_rows
    assert (item.raw, item.peer, item.patient_key, item.ack) == (adt("C1"), PEER, "123@HOSP",
                                                                 reply.decode())


async def test_ae_is_stored_rejected_with_its_reason(plain: Responder,
                                                     store: FakeMessageStore) -> None:
    (reply,) = await plain.respond(Frame(adt("C2", pid="PID|1||")), PEER)
    ack = parse(reply)
    assert msa(reply) == ("AE", "C2")
    assert ack.get("ERR", 2) == "PID" and ack.get("ERR", 2, 3) == "3"   # ERR-2 PID^1^3
    assert ack.get("ERR", 3) == "101"                                    # table 0357
    (row,) = await store.find()
    assert (row.status, row.ack_code) == (REJECTED, "AE")
    assert row.reason is not None and row.reason.startswith("PID-3")


async def test_resend_returns_the_identical_stored_ack(plain: Responder,
                                                       store: FakeMessageStore) -> None:
    (first,) = await plain.respond(Frame(adt("C3")), PEER)
    (again,) = await plain.respond(Frame(adt("C3")), PEER)
    assert again == first  # same MSH-7 and MSH-10 although the clock moved on
    assert len(await store.find()) == 1


# -- enhanced mode (MSH-15 accept ACK, MSH-16 application ACK; table 0155) ---------------------


@pytest.mark.parametrize(("acc", "app", "pid", "expected"), [
    ("AL", "NE", "PID|1||123", [("CA", "C4")]),
    ("AL", "AL", "PID|1||123", [("CA", "C4"), ("AA", "C4")]),
    ("AL", "ER", "PID|1||", [("CE", "C4"), ("AE", "C4")]),
    ("AL", "ER", "PID|1||123", [("CA", "C4")]),
    ("NE", "AL", "PID|1||123", [("AA", "C4")]),
    ("ER", "AL", "PID|1||123", [("AA", "C4")]),
    ("NE", "NE", "PID|1||123", [("CA", "C4")]),  # MLLP still needs one answer
])
async def test_enhanced_mode(plain: Responder, store: FakeMessageStore, acc: str, app: str,
                             pid: str, expected: list[tuple[str, str]]) -> None:
    replies = await plain.respond(Frame(adt("C4", acc=acc, app=app, pid=pid)), PEER)
    assert [msa(r) for r in replies] == expected
    if expected[0][0] == "CE":
        assert all(parse(r).get("ERR", 2) == "PID" for r in replies)
    (row,) = await store.find()
    assert row.ack_code == ("AA" if expected[-1][0] in ("CA", "AA") else "AE")


async def test_enhanced_resend_returns_both_stored_frames(plain: Responder) -> None:
    frame = Frame(adt("C5", acc="AL", app="AL"))
    first = await plain.respond(frame, PEER)
    assert await plain.respond(frame, PEER) == first
    assert len(first) == 2


# -- batches (FHS/BHS ... BTS/FTS in one frame) -----------------------------------------------


async def test_batch_gets_one_reply_with_an_msa_per_message(plain: Responder,
                                                            store: FakeMessageStore) -> None:
    payload = (b"FHS|^~\\&|HIS|WARD\rBHS|^~\\&|HIS|WARD\r" + adt("B1") + adt("B2", pid="PID|1||")
               + b"BTS|2\rFTS|1\r")
    (reply,) = await plain.respond(Frame(payload), PEER)
    lines = [ln for ln in reply.decode().split("\r") if ln]
    assert lines[0].startswith("BHS|") and lines[-1] == "BTS|2"
    assert [ln.split("|")[1:3] for ln in lines if ln.startswith("MSA|")] == [
        ["AA", "B1"], ["AE", "B2"]]
    rows = sorted(await store.find(), key=lambda r: r.id)
    assert [(r.control_id, r.status) for r in rows] == [("B1", ACCEPTED), ("B2", REJECTED)]


async def test_batch_without_messages_is_rejected(plain: Responder) -> None:
    (reply,) = await plain.respond(Frame(b"BHS|^~\\&|HIS|WARD\rBTS|0\r"), PEER)
    assert msa(reply)[0] == "AR"


# -- oversize frames and facility policy ------------------------------------------------------


async def test_frame_too_large_gets_ar_naming_the_size(plain: Responder,
                                                       store: FakeMessageStore) -> None:
    (reply,) = await plain.respond(FrameTooLarge(2_345_678), PEER)
    ack = parse(reply)
    assert ack.get("MSA", 1) == "AR"
    assert "2345678 bytes" in ack.get("MSA", 3)
    assert "2345678 bytes" in ack.get("ERR", 8)
    (row,) = await store.find()
    assert row.status == REJECTED and "2345678" in (row.reason or "")


async def test_disallowed_peer_is_rejected_at_msh4(writer: StoreWriter,
                                                   store: FakeMessageStore) -> None:
    r = responder(writer, WARD=("10.0.0.1",))
    (refused,) = await r.respond(Frame(adt("P1")), "10.9.9.9")
    ack = parse(refused)
    assert msa(refused) == ("AR", "P1")
    assert (ack.field("ERR", 2), ack.get("ERR", 3)) == ("MSH^1^4", "204")
    assert "10.9.9.9" in ack.get("ERR", 8)
    (allowed,) = await r.respond(Frame(adt("P2")), "10.0.0.1")
    assert msa(allowed) == ("AA", "P2")
    statuses = {m.control_id: m.status for m in await store.find()}
    assert statuses == {"P1": REJECTED, "P2": ACCEPTED}


async def test_unknown_facility_rejected_when_required(writer: StoreWriter) -> None:
    r = responder(writer, require_known=True, WARD=())
    (reply,) = await r.respond(Frame(adt("U1", facility="ELSEWHERE")), PEER)
    assert msa(reply) == ("AR", "U1")
    assert parse(reply).field("ERR", 2) == "MSH^1^4"
    (known,) = await r.respond(Frame(adt("U2")), PEER)
    assert msa(known) == ("AA", "U2")


# -- rejects still echo MSH-10 when the MSH can be read -----------------------------------------


async def test_oversize_reject_echoes_the_senders_header(plain: Responder) -> None:
    head = adt("BIG1")[:200]
    (reply,) = await plain.respond(FrameTooLarge(5_000_000, head), PEER)
    ack = parse(reply)
    assert msa(reply) == ("AR", "BIG1")
    assert (ack.get("MSH", 5), ack.get("MSH", 6)) == ("HIS", "WARD")


async def test_undecodable_bytes_reject_echoes_the_senders_header(plain: Responder) -> None:
    raw = adt("LAT1").replace(b"PID|1||123^^^HOSP^MR", b"PID|1||123^^^HOSP^MR||Jos\xe9^A")
    (reply,) = await plain.respond(Frame(raw), PEER)
    assert msa(reply) == ("AR", "LAT1")
    assert "0xE9" in parse(reply).get("ERR", 8)


async def test_unreadable_segment_reject_echoes_the_senders_header(plain: Responder) -> None:
    raw = adt("SEG1") + b"Jane said hello\r"
    (reply,) = await plain.respond(Frame(raw), PEER)
    ack = parse(reply)
    assert msa(reply) == ("AR", "SEG1")
    assert ack.get("ERR", 2) == "?" and "Jane" not in reply.decode()


async def test_batch_reply_mirrors_the_batch_delimiters(plain: Responder) -> None:
    message = adt("BD1").replace(b"|", b"#").replace(b"MSH#^~\\&#", b"MSH#^~\\&#")
    payload = b"BHS#^~\\&#HIS#WARD\r" + message + b"BTS#1\r"
    (reply,) = await plain.respond(Frame(payload), PEER)
    lines = [ln for ln in reply.decode().split("\r") if ln]
    assert lines[0] == "BHS#^~\\&" and lines[-1] == "BTS#1"
    assert any(ln.startswith("MSA#AA#BD1") for ln in lines)
