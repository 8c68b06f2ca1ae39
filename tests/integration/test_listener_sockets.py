"""The MLLP listener against hostile and unusual clients, through real sockets.

Each test starts the listener in-process (``start_listener``) on a migrated SQLite data dir and
the session's real embedded broker, does its damage, and ends by proving the server still
answers a normal ADT message with AA on a new connection (DESIGN.md section 5: "Bad input never
takes the service down").
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

import adt_listener.server as server_module
from adt_listener.app import Listener, start_listener
from adt_listener.client import MllpClient, Reply
from tests.integration.helpers import store_rows
from transcare.broker import EmbeddedBroker
from transcare.db.migrate import database_urls, upgrade
from transcare.settings import FacilitySettings, Settings

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
T = TypeVar("T")
_ids = itertools.count(1)
StartListener = Callable[..., Awaitable[Listener]]


# --------------------------------------------------------------------------- helpers


async def within(aw: Coroutine[Any, Any, T], seconds: float = 15.0) -> T:
    """Nothing in these tests may hang: every socket wait has a deadline."""
    return await asyncio.wait_for(aw, seconds)


def adt(control_id: str, facility: str = "GENHOSP", *, sep: str = "\r", msh15: str = "",
        msh16: str = "", msh18: str = "", name: str = "DOE^JANE",
        encoding: str = "ascii") -> bytes:
    """A valid ADT^A04 (the shape of tests/integration/data/a04.hl7)."""
    msh = ["MSH", "^~\\&", "REG", facility, "TRANSCARE", "TC", "20261123101500-0500", "",
           "ADT^A04^ADT_A01", control_id, "P", "2.5.1", "", "", msh15, msh16, "", msh18]
    segments = [
        "|".join(msh).rstrip("|"),
        "EVN|A04|20261123101500-0500",
        f"PID|1||PATIENTID^^^{facility}^MR||{name}||19700101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701",
        f"PV1|1|E|ED^01^A^{facility}||||1234^SMITH^ANN|||||||||||V1001",
    ]
    return (sep.join(segments) + sep).encode(encoding)


def unique_id(prefix: str = "T") -> str:
    return f"{prefix}{next(_ids):06d}"


def wrap(payload: bytes) -> bytes:
    return VT + payload + FS + CR


def segment(reply: str | bytes, name: str) -> str:
    """The first segment ``name`` of an ACK ('' when absent)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    for line in text.replace("\n", "\r").split("\r"):
        if line.startswith(name):
            return line
    return ""


def msa(reply: str | bytes) -> tuple[str, str]:
    """(MSA-1 code, MSA-2 control id) of an ACK."""
    fields = segment(reply, "MSA").split("|")
    return (fields[1] if len(fields) > 1 else "", fields[2] if len(fields) > 2 else "")


def port_of(listener: Listener) -> int:
    return listener.addresses[0][1]


async def connect(listener: Listener, ssl_context: ssl.SSLContext | None = None,
                  timeout: float = 10.0) -> MllpClient:
    return await within(MllpClient.connect("127.0.0.1", port_of(listener), timeout=timeout,
                                           ssl_context=ssl_context))


async def send(client: MllpClient, message: bytes) -> list[Reply]:
    return await within(client.send(message))


async def rows_total(listener: Listener) -> int:
    return sum((await listener.store.count_by_status()).values())


async def assert_still_serving(listener: Listener,
                               ssl_context: ssl.SSLContext | None = None) -> None:
    """A new connection gets AA for a normal ADT message."""
    client = await connect(listener, ssl_context)
    try:
        control_id = unique_id("OK")
        replies = await send(client, adt(control_id))
        assert [r.code for r in replies] == ["AA"], replies
        assert msa(replies[0].text) == ("AA", control_id)
    finally:
        await client.close()


async def wait_for_condition(check: Callable[[], bool], seconds: float = 5.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.02)
    await within(poll(), seconds)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def listen(tmp_path: Path, broker: EmbeddedBroker) -> AsyncIterator[StartListener]:
    """Start the listener with settings overrides; every one started is stopped at teardown."""
    started: list[Listener] = []

    async def start(**overrides: Any) -> Listener:
        settings = Settings(data_dir=tmp_path, kafka_bootstrap=broker.bootstrap,
                            broker_embedded=True, mllp_host="127.0.0.1", mllp_port=0,
                            **overrides)
        # Alembic's env.py runs its own event loop: migrate from a thread.
        for url in database_urls(settings):
            await asyncio.to_thread(upgrade, url)
        listener = await within(start_listener(settings), 60)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        await asyncio.wait_for(listener.stop(), 30)


@pytest.fixture
async def listener(listen: StartListener) -> Listener:
    return await listen()


class LogRecorder:
    """Stands in for the server's structlog logger and records (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))
        return record

    def names(self) -> list[str]:
        return [event for _, event, _ in self.events]


# --------------------------------------------------------------------------- tests


async def test_many_concurrent_persistent_connections_all_get_aa(listener: Listener) -> None:
    clients, per_client = 20, 25

    async def one_client(n: int) -> list[tuple[str, str, str]]:
        client = await connect(listener, timeout=30)
        got = []
        try:
            for i in range(per_client):
                control_id = f"CONC{n:02d}{i:03d}"
                replies = await within(client.send(adt(control_id)), 30)
                got.append((control_id, replies[0].code, msa(replies[0].text)[1]))
                assert len(replies) == 1
        finally:
            await client.close()
        return got

    results = await within(asyncio.gather(*(one_client(n) for n in range(clients))), 120)
    flat = [r for per in results for r in per]
    assert len(flat) == clients * per_client
    for control_id, code, echoed in flat:
        assert code == "AA", control_id
        assert echoed == control_id
    counts = await listener.store.count_by_status()
    assert sum(counts.values()) == 500, counts
    assert counts["rejected"] == 0
    await assert_still_serving(listener)


async def test_frame_split_across_many_tiny_writes(listener: Listener) -> None:
    client = await connect(listener)
    try:
        control_id = unique_id("SPLIT")
        data = wrap(adt(control_id))
        for i in range(0, len(data), 3):
            await within(client.send_raw(data[i:i + 3]))
            await asyncio.sleep(0.002)
        reply = await within(client.read_frame())
        assert msa(reply) == ("AA", control_id)
    finally:
        await client.close()
    await assert_still_serving(listener)


@pytest.mark.parametrize("count", [10, 200], ids=["10", "200-beyond-max-pipelined"])
async def test_pipelined_frames_in_one_write_are_answered_in_order(listener: Listener,
                                                                   count: int) -> None:
    # 200 frames exceed ServerLimits.max_pipelined (64): the server pauses reading and resumes.
    client = await connect(listener)
    try:
        ids = [unique_id("PIPE") for _ in range(count)]
        await within(client.send_raw(b"".join(wrap(adt(c)) for c in ids)))
        replies = [await within(client.read_frame()) for _ in ids]
        assert [msa(r) for r in replies] == [("AA", c) for c in ids]
    finally:
        await client.close()
    await assert_still_serving(listener)


async def test_junk_outside_frames_is_ignored_and_cr_after_fs_is_optional(
        listener: Listener) -> None:
    client = await connect(listener)
    try:
        ids = [unique_id("JUNK") for _ in range(4)]
        data = (
            b"\n\x00  \r\n"                         # whitespace before the first start block
            + b"garbage!!\xff\x01" + wrap(adt(ids[0]))  # non-whitespace junk
            + b"\r\n\n\x00\x00   \t"                  # whitespace between frames
            + b"more junk ### " + wrap(adt(ids[1]))   # junk between frames
            + VT + adt(ids[2]) + FS                     # no CR after FS, next frame follows
            + b"\n" + wrap(adt(ids[3]))
        )
        await within(client.send_raw(data))
        replies = [await within(client.read_frame()) for _ in ids]
        assert [msa(r) for r in replies] == [("AA", c) for c in ids]

        # A frame ending with FS alone is answered without waiting for the CR.
        last = unique_id("NOCR")
        await within(client.send_raw(b"\x00 junk " + VT + adt(last) + FS))
        assert msa(await within(client.read_frame())) == ("AA", last)
        # ... and a late CR followed by another frame does not confuse the decoder.
        after = unique_id("LATECR")
        await within(client.send_raw(CR + wrap(adt(after))))
        assert msa(await within(client.read_frame())) == ("AA", after)
    finally:
        await client.close()
    assert await rows_total(listener) == 6
    await assert_still_serving(listener)


@pytest.mark.parametrize("sep", ["\n", "\r\n"], ids=["LF", "CRLF"])
async def test_lf_and_crlf_segment_separators_get_aa(listener: Listener, sep: str) -> None:
    client = await connect(listener)
    try:
        control_id = unique_id("SEP")
        replies = await send(client, adt(control_id, sep=sep))
        assert [r.code for r in replies] == ["AA"], replies
        assert msa(replies[0].text) == ("AA", control_id)
    finally:
        await client.close()
    await assert_still_serving(listener)


async def test_client_disconnecting_mid_frame_is_logged_and_stores_nothing(
        listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = LogRecorder()
    monkeypatch.setattr(server_module, "log", recorder)
    client = await connect(listener)
    partial = wrap(adt(unique_id("HALF")))[:120]
    await within(client.send_raw(partial))
    await asyncio.sleep(0.1)  # let the server read the partial frame
    await client.close()
    await wait_for_condition(lambda: "mllp.disconnected_mid_frame" in recorder.names())
    level, _, fields = next(e for e in recorder.events if e[1] == "mllp.disconnected_mid_frame")
    assert level == "warning"
    assert fields["bytes"] == len(partial) - 1  # everything after the start block
    assert await rows_total(listener) == 0
    await assert_still_serving(listener)
    assert await rows_total(listener) == 1


async def test_oversize_frame_gets_ar_and_the_connection_keeps_working(
        listen: StartListener) -> None:
    listener = await listen(max_message_bytes=4096)
    client = await connect(listener)
    try:
        big = adt(unique_id("BIG"))
        big = big + b"NTE|1||" + b"X" * (50_000 - len(big)) + b"\r"
        await within(client.send_raw(wrap(big)))
        reply = (await within(client.read_frame())).decode("ascii")
        code, _ = msa(reply)
        assert code == "AR", reply
        msa_text = segment(reply, "MSA").split("|")[3]
        assert str(len(big)) in msa_text and "maximum size" in msa_text, msa_text
        assert str(len(big)) in segment(reply, "ERR")

        control_id = unique_id("AFTERBIG")
        replies = await send(client, adt(control_id))
        assert msa(replies[0].text) == ("AA", control_id)
    finally:
        await client.close()
    counts = await listener.store.count_by_status()
    assert counts["rejected"] == 1 and counts["accepted"] + counts["processed"] == 1, counts
    await assert_still_serving(listener)


async def test_undecodable_byte_gets_ar_naming_the_byte(listener: Listener) -> None:
    client = await connect(listener)
    try:
        # cp1252 en dash (0x96) in a message that declares nothing (so: ASCII).
        raw = adt(unique_id("CP"), name="O\u2013BRIEN^MARY", encoding="cp1252")
        assert b"\x96" in raw
        replies = await send(client, raw)
        assert [r.code for r in replies] == ["AR"], replies
        err = segment(replies[0].text, "ERR")
        assert "0x96" in err, err
        offset = raw.index(b"\x96")
        assert f"offset {offset}" in err, err
    finally:
        await client.close()
    assert (await listener.store.count_by_status())["rejected"] == 1
    await assert_still_serving(listener)


async def test_bom_and_latin1_messages_get_aa_and_raw_bytes_are_kept(
        listener: Listener, tmp_path: Path) -> None:
    bom_id, latin_id = unique_id("BOM"), unique_id("LATIN")
    bom = b"\xef\xbb\xbf" + adt(bom_id, name="M\u00dcLLER^J\u00dcRGEN", encoding="utf-8")
    latin = adt(latin_id, msh18="8859/1", name="M\u00dcLLER^J\u00dcRGEN", encoding="latin-1")
    assert b"\xdc" in latin
    client = await connect(listener)
    try:
        for control_id, raw in ((bom_id, bom), (latin_id, latin)):
            replies = await send(client, raw)
            assert [r.code for r in replies] == ["AA"], (control_id, replies)
            assert msa(replies[0].text) == ("AA", control_id)
    finally:
        await client.close()
    db = tmp_path / "transcare-messages.db"  # the message store, beside transcare.db
    (bom_row,) = store_rows(db, f"control_id = '{bom_id}'")
    (latin_row,) = store_rows(db, f"control_id = '{latin_id}'")
    assert bytes(bom_row["raw"]) == bom
    assert bytes(latin_row["raw"]) == latin
    assert bom_row["charset"] == "utf-8"
    assert latin_row["charset"] == "latin-1"
    await assert_still_serving(listener)


async def test_acks_do_not_wait_for_a_transaction_on_the_service_database(
        listener: Listener, tmp_path: Path) -> None:
    """The message store is a SQLite file of its own: a worker transaction holding the
    service database's write lock (here: held until the ACK is in) never delays an ACK.
    (On one file the listener waited for every worker transaction: ACK p99 40 ms at 500
    msg/s in bench/e2e.)"""
    import sqlite3

    worker = sqlite3.connect(tmp_path / "transcare.db", isolation_level=None)
    try:
        worker.execute("BEGIN IMMEDIATE")  # the service database's write lock, held
        client = await connect(listener)
        try:
            control_id = unique_id("LOCKED")
            replies = await within(send(client, adt(control_id)), 10)
            assert [r.code for r in replies] == ["AA"], replies
        finally:
            await client.close()
        assert worker.in_transaction  # the lock was held the whole time
    finally:
        worker.rollback()
        worker.close()
    (row,) = store_rows(tmp_path / "transcare-messages.db", f"control_id = '{control_id}'")
    assert row["status"] in ("accepted", "processed")


async def test_idle_connection_is_closed(listen: StartListener) -> None:
    listener = await listen(idle_timeout_s=0.5)
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port_of(listener)))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        data = await within(reader.read(1024), 5)
        assert data == b""  # EOF: the server closed the idle connection
        assert loop.time() - started >= 0.3
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    await assert_still_serving(listener)


async def test_connection_over_the_limit_is_closed_and_the_others_work(
        listen: StartListener) -> None:
    listener = await listen(max_connections=3)
    clients = [await connect(listener) for _ in range(3)]
    try:
        for client in clients:
            replies = await send(client, adt(unique_id("LIM")))
            assert replies[0].code == "AA"
        assert listener.server.connection_count == 3

        loop = asyncio.get_running_loop()
        started = loop.time()
        reader, writer = await within(asyncio.open_connection("127.0.0.1", port_of(listener)))
        try:
            writer.write(wrap(adt(unique_id("FOURTH"))))
            try:
                data = await within(reader.read(1024), 5)
            except ConnectionResetError:
                data = b""
            assert data == b"", data  # closed, never answered
            assert loop.time() - started < 1.0  # at once, not after the idle timeout
        finally:
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)

        for client in clients:
            replies = await send(client, adt(unique_id("LIM")))
            assert replies[0].code == "AA"
    finally:
        await clients[0].close()
    await wait_for_condition(lambda: listener.server.connection_count == 2)
    try:
        await assert_still_serving(listener)
    finally:
        for client in clients[1:]:
            await client.close()


async def test_resend_gets_the_byte_identical_ack_and_one_row(listener: Listener) -> None:
    control_id = unique_id("DUP")
    message = adt(control_id)
    acks = []
    for _ in range(2):  # two connections: the sender reconnected and resent
        client = await connect(listener)
        try:
            await within(client.send_raw(wrap(message)))
            acks.append(await within(client.read_frame()))
        finally:
            await client.close()
    client = await connect(listener)
    try:  # and once more on a persistent connection, twice in a row
        for _ in range(2):
            await within(client.send_raw(wrap(message)))
            acks.append(await within(client.read_frame()))
    finally:
        await client.close()
    assert msa(acks[0]) == ("AA", control_id)
    assert all(ack == acks[0] for ack in acks), acks
    assert await rows_total(listener) == 1
    await assert_still_serving(listener)


async def test_enhanced_mode_gets_commit_then_application_ack(listener: Listener) -> None:
    client = await connect(listener)
    try:
        control_id = unique_id("ENH")
        replies = await send(client, adt(control_id, msh15="AL", msh16="AL"))
        assert [r.code for r in replies] == ["CA", "AA"], replies
        assert [msa(r.text)[1] for r in replies] == [control_id, control_id]
    finally:
        await client.close()
    assert await rows_total(listener) == 1
    await assert_still_serving(listener)


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 (files) and a client certificate."""

    ca: trustme.CA
    client: trustme.LeafCert
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self, with_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        if with_cert:
            self.client.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    pki = Pki(ca, ca.issue_cert("sender.genhosp.example"), base / "ca.pem",
              base / "server.pem", base / "server.key")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(pki.cert_file), append=i > 0)
    server.private_key_pem.write_to_path(str(pki.key_file))
    return pki


async def test_tls_requires_a_client_certificate(listen: StartListener, pki: Pki) -> None:
    listener = await listen(tls_cert=str(pki.cert_file), tls_key=str(pki.key_file),
                            tls_client_ca=str(pki.ca_file))
    good = pki.client_context(with_cert=True)
    await assert_still_serving(listener, good)

    # No client certificate: the handshake fails (TLS 1.2) or the server's alert arrives on
    # the first read (TLS 1.3); either way no ACK ever comes back.
    refused: BaseException | None = None
    replies: list[Reply] = []
    try:
        client = await connect(listener, pki.client_context(with_cert=False), timeout=5)
        try:
            replies = await within(client.send(adt(unique_id("NOCERT"))), 10)
        finally:
            await client.close()
    except (OSError, asyncio.IncompleteReadError) as exc:  # ssl.SSLError, ConnectionError
        refused = exc
    assert refused is not None, f"a client without a certificate was answered: {replies}"

    # Plain TCP to the TLS port is not answered either, and does not hurt the server.
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port_of(listener)))
    try:
        writer.write(wrap(adt(unique_id("PLAIN"))))
        try:
            data = await within(reader.read(1024), 10)
        except ConnectionResetError:
            data = b""
        assert VT not in data
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)

    await assert_still_serving(listener, good)
    assert await rows_total(listener) == 2


async def test_facility_allowed_sources_rejects_other_addresses(listen: StartListener) -> None:
    listener = await listen(facilities={
        "GOODHOSP": FacilitySettings("GOODHOSP", "America/New_York", ("10.9.9.9",)),
    })
    client = await connect(listener)
    try:
        control_id = unique_id("FAC")
        replies = await send(client, adt(control_id, facility="GOODHOSP"))
        assert [r.code for r in replies] == ["AR"], replies
        assert msa(replies[0].text) == ("AR", control_id)
        err = segment(replies[0].text, "ERR")
        assert err.split("|")[2] == "MSH^1^4", err  # ERR-2 names MSH-4
        assert "127.0.0.1" in err and "GOODHOSP" in err, err
    finally:
        await client.close()
    counts = await listener.store.count_by_status()
    assert counts["rejected"] == 1 and sum(counts.values()) == 1, counts
    await assert_still_serving(listener)  # GENHOSP has no source restriction
