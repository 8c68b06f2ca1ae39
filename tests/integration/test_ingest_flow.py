"""ADT ingest end to end through real sockets, the real broker and the real processes.

The listener and the worker run as separate processes (``transcare listener`` and ``transcare
worker``) against the session's embedded broker; assertions read the store and the topics.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from adt_listener.client import COMMIT_CODES, MllpClient, expects_application_ack
from adt_listener.hl7.framing import split_file
from tests.conftest import Service
from tests.integration.helpers import read_events, store_rows, wait_until_settled

# ADT files the listener answers AE on purpose (no patient identifier at all): see docs/acks.md.
MSGS_AE = {"hapi__NewPipeParserTest__6.hl7", "rethink__edge-empty-segments__1.hl7"}
# Files in bad/ that are valid HL7 and get AA: see docs/acks.md.
BAD_BUT_VALID = {"hapi__DefaultValidationTest__1.hl7",
                 "rethink__invalid-trailing-empty-fields__1.hl7"}


def _msa_codes(reply: str) -> list[str]:
    lines = reply.replace("\n", "\r").split("\r")
    return [ln.split(ln[3])[1] for ln in lines if ln.startswith("MSA") and len(ln) > 4]


def _adt_files(corpus: Path) -> set[str]:
    """Files whose MSH-9 type is ADT, per the corpus index (column 4)."""
    rows = (corpus / "INDEX.tsv").read_text().splitlines()[1:]
    return {r.split("\t")[0] for r in rows if r.split("\t")[3][:3] == "ADT"}


async def _send_files(port: int, files: list[Path]) -> dict[str, list[str]]:
    client = await MllpClient.connect("127.0.0.1", port, timeout=20)
    codes: dict[str, list[str]] = {}
    try:
        for path in files:
            await client.send_raw(b"\x0b" + path.read_bytes() + b"\x1c\x0d")
            reply = (await client.read_frame()).decode("utf-8", "replace")
            codes[path.name] = _msa_codes(reply)
            first = codes[path.name][0] if codes[path.name] else ""
            if first in COMMIT_CODES and expects_application_ack(path.read_bytes(), first):
                await client.read_frame()  # enhanced mode: the application ACK follows
    finally:
        await client.close()
    return codes


async def test_every_corpus_message_is_acknowledged_and_ends_visible(
        service: Service, corpus: Path) -> None:
    files = sorted((corpus / "msgs").glob("*.hl7"))
    adt = _adt_files(corpus)
    codes = await _send_files(service.mllp_port, files)
    for path in files:
        got = codes[path.name]
        assert got, f"{path.name}: no MSA in the reply"
        if path.name in MSGS_AE:
            assert got == ["AE"], path.name
        elif path.name in adt:
            assert set(got) <= {"AA", "CA"}, f"{path.name}: {got}"
        else:
            assert set(got) <= {"AR", "CR"}, f"{path.name}: {got}"
    db = service.message_store
    await wait_until_settled(db)
    statuses = {r["status"] for r in store_rows(db)}
    assert statuses <= {"processed", "deadlettered", "rejected"}
    for row in store_rows(db, "status = 'deadlettered'"):
        assert row["reason"], "a dead letter must carry its reason"


async def test_bad_corpus_gets_nak_or_close_and_server_keeps_serving(
        service: Service, corpus: Path) -> None:
    for path in sorted((corpus / "bad").glob("*.hl7")):
        client = await MllpClient.connect("127.0.0.1", service.mllp_port, timeout=20)
        try:
            await client.send_raw(b"\x0b" + path.read_bytes() + b"\x1c\x0d")
            try:
                codes = _msa_codes((await client.read_frame()).decode("utf-8", "replace"))
            except ConnectionError:
                codes = ["closed"]
        finally:
            await client.close()
        if path.name in BAD_BUT_VALID:
            assert codes == ["AA"], path.name
        else:
            assert codes and all(c in ("AE", "AR", "CE", "CR", "closed") for c in codes), (
                f"{path.name}: {codes}")
    good = (corpus / "msgs" / "fhirconv__ADT-A01-01__1.hl7").read_bytes()
    client = await MllpClient.connect("127.0.0.1", service.mllp_port)
    assert [r.code for r in await client.send(good)] == ["AA"]
    await client.close()


async def test_raw_streams_are_split_and_each_message_acknowledged(
        service: Service, corpus: Path) -> None:
    streams = corpus / "streams"
    index = (streams / "STREAMS_INDEX.tsv").read_text().splitlines()[1:]
    client = await MllpClient.connect("127.0.0.1", service.mllp_port, timeout=20)
    try:
        for line in index:
            name, count = line.split("\t")[0], int(line.split("\t")[3].split()[0])
            messages = split_file((streams / name).read_bytes())
            assert len(messages) == count, name
            for message in messages:
                replies = await client.send(message)
                assert replies and replies[-1].code in ("AA", "AR", "CA"), name
    finally:
        await client.close()
    # mirth__TestADT.raw: 124 messages with repeated MSH-10: one row per control id, the rest resends.
    sent = split_file((streams / "mirth__TestADT.raw").read_bytes())
    distinct = {m.split(b"\r")[0].split(b"|")[9] for m in sent}
    rows = store_rows(service.message_store, "sending_facility = '1'")
    assert len(sent) == 124 and len(rows) == len(distinct)


async def test_resent_control_id_is_stored_and_processed_once(
        service: Service, broker_bootstrap: str, corpus: Path) -> None:
    message = (corpus / "msgs" / "fhirconv__ADT-A03-01__1.hl7").read_bytes()
    message = message.replace(b"|MSG00001|", b"|RESEND-0001|", 1)
    client = await MllpClient.connect("127.0.0.1", service.mllp_port)
    first = await client.send(message)
    second = await client.send(message)
    await client.close()
    assert first == second and first[0].code == "AA"
    db = service.message_store
    rows = store_rows(db, "control_id = 'RESEND-0001'")
    assert len(rows) == 1
    await wait_until_settled(db)
    events = await read_events(broker_bootstrap, "adt.events.v1", {"GHHSFacility|RESEND-0001"},
                               keys={rows[0]["patient_key"].encode()})
    assert len(events["GHHSFacility|RESEND-0001"]) == 1
    assert store_rows(db, "control_id = 'RESEND-0001'")[0]["status"] == "processed"


async def _send_as(service: Service, corpus: Path, name: str, control_id: str) -> Path:
    """Send a corpus message under a new MSH-10, expect AA, wait until it settled; the db."""
    message = (corpus / "msgs" / name).read_bytes()
    message = message.replace(b"|MSG00001|", f"|{control_id}|".encode(), 1)
    client = await MllpClient.connect("127.0.0.1", service.mllp_port)
    assert (await client.send(message))[0].code == "AA"
    await client.close()
    db = service.message_store
    await wait_until_settled(db)
    return db


async def test_patient_order_key_and_event_content(
        service: Service, broker_bootstrap: str, corpus: Path) -> None:
    db = await _send_as(service, corpus, "fhirconv__ADT-A01-01__1.hl7", "ORDER-0001")
    row = store_rows(db, "control_id = 'ORDER-0001'")[0]
    events = await read_events(broker_bootstrap, "adt.events.v1", {"GHHSFacility|ORDER-0001"},
                               keys={row["patient_key"].encode()})
    event = events["GHHSFacility|ORDER-0001"][0]
    assert event["patient_key"] == row["patient_key"]
    assert event["header"]["trigger_event"] == "A01"
    assert event["patient"]["identifiers"], "every PID-3 identifier is carried"


async def _stream(port: int, prefix: str, count: int, acked: list[str]) -> None:
    template = Path(__file__).parent / "data" / "a04.hl7"
    base = template.read_bytes()
    try:
        client = await MllpClient.connect("127.0.0.1", port, timeout=5)
        for n in range(count):
            control = f"{prefix}-{n:05d}"
            msg = base.replace(b"CONTROLID", control.encode()).replace(
                b"PATIENTID", f"P{n % 50}".encode())
            replies = await client.send(msg)
            if replies[0].code == "AA":
                acked.append(control)
    except (TimeoutError, ConnectionError, OSError):
        return


async def test_listener_sigkill_loses_no_acknowledged_message(
        service: Service, broker_bootstrap: str) -> None:
    acked: list[str] = []
    sender = asyncio.create_task(_stream(service.mllp_port, "KILL", 5000, acked))
    while len(acked) < 300:
        await asyncio.sleep(0.01)
    service.kill("listener")  # SIGKILL mid-stream
    await sender
    assert 300 <= len(acked) < 5000
    service.start("listener")
    db = service.message_store
    stored = {r["control_id"] for r in store_rows(db, "control_id LIKE 'KILL-%'")}
    assert set(acked) <= stored, "an acknowledged message is missing from the store"
    await wait_until_settled(db)
    ids = {f"GENHOSP|{r['control_id']}" for r in store_rows(db, "control_id LIKE 'KILL-%'")}
    keys = {r["patient_key"].encode() for r in store_rows(db, "control_id LIKE 'KILL-%'")}
    events = await read_events(broker_bootstrap, "adt.events.v1", ids, keys=keys)
    assert ids <= set(events), f"{len(ids - set(events))} stored messages never reached events"


async def test_replay_republishes_stored_messages_and_they_are_processed_again(
        service: Service, broker_bootstrap: str, corpus: Path) -> None:
    import subprocess
    import sys

    db = await _send_as(service, corpus, "fhirconv__ADT-A03-01__1.hl7", "REPLAY-0001")
    done = subprocess.run([sys.executable, "-m", "transcare.cli", "replay", "--facility",
                           "GHHSFacility"], env=service.env, capture_output=True, text=True,
                          check=True)
    assert "queued for publishing again" in done.stdout
    await wait_until_settled(db)
    key = {store_rows(db, "control_id = 'REPLAY-0001'")[0]["patient_key"].encode()}
    wanted = {"GHHSFacility|REPLAY-0001"}
    # Published again with the same event id: consumers process it idempotently.
    deadline = asyncio.get_running_loop().time() + 60
    copies: list[dict[str, object]] = []
    while len(copies) < 2 and asyncio.get_running_loop().time() < deadline:
        copies = (await read_events(broker_bootstrap, "adt.events.v1", wanted, keys=key,
                                    timeout_s=10)).get("GHHSFacility|REPLAY-0001", [])
        if len(copies) < 2:
            await asyncio.sleep(0.5)
    assert len(copies) == 2 and copies[0]["event_id"] == copies[1]["event_id"]
