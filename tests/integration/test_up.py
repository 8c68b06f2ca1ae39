"""``transcare up``: the whole service on the embedded default, as ``make up`` runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from adt_listener.client import MllpClient
from transcare.broker import free_port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def test_up_runs_every_part_and_stops_cleanly(tmp_path: Path, corpus: Path) -> None:
    mllp, http, kafka = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCARE_")}
    env.update({"TRANSCARE_BROKER_PORT": str(kafka), "TRANSCARE_LOG_LEVEL": "WARNING",
                "TRANSCARE_HTTP_HOST": "127.0.0.1", "TRANSCARE_MLLP_HOST": "127.0.0.1"})
    out = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "transcare.cli", "up", "--data-dir", str(tmp_path / "data"),
         "--mllp-port", str(mllp), "--http-port", str(http)],
        env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{http}"
    try:
        log = tmp_path / "up.log"
        await _wait_for(lambda: "transcare is up" in log.read_text(errors="replace"), 60,
                        "the up banner")
        text = log.read_text(errors="replace")
        assert f"127.0.0.1:{mllp}" in text and f"http://127.0.0.1:{http}/" in text
        await _wait_for(lambda: _ready(base), 60, "/readyz")

        message = (corpus / "msgs" / "fhirconv__ADT-A01-01__1.hl7").read_bytes()
        await _send_and_see_processed(message, "UP-0001", mllp, base)
        status, metrics = _get(f"{base}/metrics")
        assert status == 200
        assert 'transcare_acks_total{code="AA"}' in metrics  # from the listener process
        # The listener's group commit: one transaction holding the one message.
        assert 'transcare_listener_store_batch_messages_bucket{le="1.0"} 1.0' in metrics
        assert "transcare_events_normalised_total" in metrics  # from the normaliser worker
        # ... and the transitions worker took the event (nobody is enrolled: unmatched).
        def transitions_counted() -> bool:
            return any(line.startswith("transcare_transitions_events_total{")
                       and 'outcome="unmatched"' in line
                       for line in _get(f"{base}/metrics")[1].splitlines())

        await _wait_for(transitions_counted, 60, "the transitions worker's count")
        assert 'transcare_messages_stored{status="processed"} 1' in metrics
        assert "transcare_oldest_in_flight_seconds " in metrics  # how far behind the workers are
        status, page = _get(f"{base}/")
        assert status == 200 and "transcare" in page and "oldest in flight (s)" in page
        # The ops page's last minute, from every process's metrics: the listener's message by
        # facility and its AA, the worker's MLLP-in-to-episode latency.
        def live_shown() -> bool:
            page = _get(f"{base}/")[1]
            return ("<h2>Live (last" in page and "<td>GHHSFacility</td>" in page
                    and '<b>1</b><span>ACK AA' in page
                    and "- / -</b><span>MLLP in to episode" not in page)

        await _wait_for(live_shown, 30, "the live figures on the ops page")
        # each stage's consumer lag, read from the broker: nothing left behind
        def lag_read() -> bool:
            body = _get(f"{base}/metrics")[1]
            return all(f'transcare_consumer_lag_records{{stage="{stage}"}} 0' in body
                       for stage in ("normaliser", "transitions", "followup"))

        await _wait_for(lag_read, 30, "the consumer lag of every stage")
        assert "<b>0</b><span>consumer lag: transitions" in _get(f"{base}/")[1]
        # Two workers: the normaliser on its own, transitions and follow-up together.
        assert _child(proc.pid, "worker", "normaliser") is not None
        assert _child(proc.pid, "worker", "transitions,followup") is not None
        text = log.read_text(errors="replace")
        assert "worker (normaliser) consuming adt.raw.v1" in text
        assert "worker (transitions, followup) consuming adt.events.v1 (group " \
               "transcare-transitions), transitions.episodes.v1 (group transcare-followup)" in text
        # The workers yield the CPU to the listener (TRANSCARE_WORKER_NICE, default 10), and
        # say so where the operator reads the start-up lines.
        listener_nice = os.getpriority(os.PRIO_PROCESS, _child(proc.pid, "listener"))
        for stages in ("normaliser", "transitions,followup"):
            worker_nice = os.getpriority(os.PRIO_PROCESS, _child(proc.pid, "worker", stages))
            assert worker_nice == min(19, listener_nice + 10), stages
            assert f"CPU priority nice {worker_nice}" in text

        # A part that crashes is restarted, and the feed goes on.
        listener = _child(proc.pid, "listener")
        os.kill(listener, signal.SIGKILL)
        await _wait_for(lambda: _child(proc.pid, "listener") not in (None, listener), 30,
                        "the listener to be restarted")
        await _send_and_see_processed(message, "UP-0002", mllp, base)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        out.close()
    assert code == 0
    assert "transcare stopped" in (tmp_path / "up.log").read_text(errors="replace")


async def _send_and_see_processed(message: bytes, control_id: str, mllp: int,
                                  base: str) -> None:
    """Send under a new MSH-10, expect AA, and wait until the API shows it processed."""
    await _wait_for(lambda: _port_open(mllp), 30, "the MLLP port")
    client = await MllpClient.connect("127.0.0.1", mllp)
    message = message.replace(b"|MSG00001|", f"|{control_id}|".encode(), 1)
    assert [r.code for r in await client.send(message)] == ["AA"]
    await client.close()

    def processed() -> bool:
        status, body = _get(f"{base}/api/messages?control_id={control_id}")
        return status == 200 and any(m["status"] == "processed" for m in json.loads(body))

    await _wait_for(processed, 90, f"{control_id} to be processed")


def _child(parent: int, part: str, stages: str = "") -> int | None:
    """The pid of ``transcare <part>`` (``--stages <stages>``) started by the supervisor
    ``parent``, if running."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        args = [a.decode() for a in cmdline if a]
        if ppid != parent or "transcare.cli" not in args:
            continue
        args = args[args.index("transcare.cli") + 1:]
        if args == [part] or (stages and args == [part, "--stages", stages]):
            return int(entry.name)
    return None


def _ready(base: str) -> bool:
    try:
        return _get(f"{base}/readyz")[0] == 200
    except OSError:
        return False


def _port_open(port: int) -> bool:
    from transcare.broker import port_open

    return port_open("127.0.0.1", port)
