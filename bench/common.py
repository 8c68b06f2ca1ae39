"""Shared benchmark helpers: ADT message generator, MLLP echo server, lean MLLP load client,
percentiles, process RSS/CPU readers and result-table printing.

The load client is deliberately lean (a raw :class:`asyncio.Protocol`, no HL7 parsing) so the
same code measures the echo baseline and the real listener; the ratio between the two is the
figure that survives a noisy machine. Every sender waits for its reply before sending the next
message, like a real MLLP sender.

Run the echo server on its own (used as a subprocess by the benchmarks)::

    python -m bench.common echo --port 2575
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

START_BLOCK = b"\x0b"
TRAILER = b"\x1c\x0d"

# --------------------------------------------------------------------------------------------
# Messages


_FIRST = [("JANE", "F"), ("MARIA", "F"), ("ANN", "F"), ("JOHN", "M"), ("ROBERT", "M"),
          ("LINDA", "F"), ("JAMES", "M"), ("PATRICIA", "F"), ("MICHAEL", "M"), ("SUSAN", "F")]
_LAST = ["DOE", "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS",
         "RODRIGUEZ", "MARTINEZ", "HERNANDEZ", "LOPEZ", "WILSON", "ANDERSON", "TAYLOR"]
_STREETS = ["MAIN ST", "OAK AVE", "MAPLE DR", "CEDAR LN", "ELM ST", "PINE RD", "LAKE VIEW BLVD"]
_CITIES = [("SPRINGFIELD", "IL", "62701"), ("BOSTON", "MA", "02118"),
           ("COLUMBUS", "OH", "43215"), ("DENVER", "CO", "80204"), ("AUSTIN", "TX", "78701")]
_UNITS = ["4WEST", "5EAST", "ICU", "CCU", "3NORTH", "ED", "OBS"]
_DIAGNOSES = ["I50.9^Heart failure, unspecified", "J18.9^Pneumonia, unspecified organism",
              "J44.1^Chronic obstructive pulmonary disease with exacerbation",
              "N17.9^Acute kidney failure, unspecified", "I63.9^Cerebral infarction, unspecified",
              "A41.9^Sepsis, unspecified organism", "E11.65^Type 2 diabetes with hyperglycemia"]
_DOCTORS = ["1234567890^ATTEND^ANN^M^^^MD", "1987654321^WELBY^MARCUS^^^^MD",
            "1122334455^HOUSE^GREGORY^^^^MD", "1555666777^GREY^MEREDITH^^^^MD"]
#: The trigger events sent, with their share of the mix.
EVENT_MIX = (("A08", 4), ("A01", 2), ("A03", 2), ("A04", 2))


class AdtGenerator:
    """Realistic ADT^A01/A03/A04/A08 messages (~600-900 bytes) with distinct MSH-10 ids.

    A pool of message bodies (varied patients, visits, events) is built once; each call to
    :meth:`message` splices a fresh control id into the next body, so generating costs the
    client almost nothing while every message stays unique for the listener's dedupe index.

    Arguments:
        run_id: prefix for control ids, distinct per run so reruns against one database
            never collide.
        pool: number of distinct message bodies.
        seed: random seed (bodies are deterministic for a given seed).
    """

    def __init__(self, run_id: str, pool: int = 4096, seed: int = 7) -> None:
        rng = random.Random(seed)
        events = [e for e, weight in EVENT_MIX for _ in range(weight)]
        base = datetime(2024, 5, 1, 8, 0, 0)
        self._run = run_id.encode("ascii")
        self._bodies: list[tuple[bytes, bytes]] = []
        for i in range(pool):
            event = events[rng.randrange(len(events))]
            when = base + timedelta(seconds=37 * i)
            self._bodies.append(_build(rng, event, 100000 + rng.randrange(50000), i, when))
        self._next = 0

    def message(self) -> bytes:
        """The next message: a pool body with a new control id in MSH-10."""
        head, tail = self._bodies[self._next % len(self._bodies)]
        self._next += 1
        return b"%s%s%08d%s" % (head, self._run, self._next, tail)

    @property
    def count(self) -> int:
        """Messages generated so far."""
        return self._next


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def _build(rng: random.Random, event: str, mrn: int, visit: int,
           when: datetime) -> tuple[bytes, bytes]:
    """One message body split around MSH-10 (the control id goes between the halves)."""
    first, sex = _FIRST[rng.randrange(len(_FIRST))]
    last = _LAST[rng.randrange(len(_LAST))]
    city, state, zipcode = _CITIES[rng.randrange(len(_CITIES))]
    dob = f"{rng.randrange(1930, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    doctor = _DOCTORS[rng.randrange(len(_DOCTORS))]
    unit = _UNITS[rng.randrange(len(_UNITS))]
    patient_class = {"A04": rng.choice("OE")}.get(event, rng.choice("IIIO"))
    admitted = when - timedelta(hours=rng.randrange(1, 96))
    discharged = _ts(when) if event == "A03" else ""
    disposition = "01" if event == "A03" else ""
    diagnosis = _DIAGNOSES[rng.randrange(len(_DIAGNOSES))]
    structure = {"A01": "ADT_A01", "A03": "ADT_A03", "A04": "ADT_A01", "A08": "ADT_A01"}[event]
    head = f"MSH|^~\\&|EPICADT|GENHOSP|TRANSCARE|TRANSCARE|{_ts(when)}||ADT^{event}^{structure}|"
    tail = "\r".join([
        "|P|2.5.1",
        f"EVN|{event}|{_ts(when)}|||JSMITH^SMITH^JOHN^^^^^^GENHOSP",
        f"PID|1||{mrn}^^^GENHOSP^MR||{last}^{first}||{dob}|{sex}|||"
        f"{rng.randrange(10, 9999)} {_STREETS[rng.randrange(len(_STREETS))]}^^{city}^{state}^"
        f"{zipcode}^USA^H||(555)555-{rng.randrange(10000):04d}^PRN^PH|||M||"
        f"{900000 + visit}^^^GENHOSP^AN",
        f"PD1|||GENERAL HOSPITAL^^1234|{doctor}",
        f"NK1|1|{last}^PAT|SPO^Spouse|||(555)555-{rng.randrange(10000):04d}",
        f"PV1|1|{patient_class}|{unit}^{rng.randrange(100, 499)}^{rng.choice('AB')}^GENHOSP"
        f"||||{doctor}|||MED||||7|||{doctor}|{'IN' if patient_class == 'I' else 'OP'}|"
        f"V{700000 + visit}^^^GENHOSP^VN|||||||||||||||||{disposition}||||||||"
        f"{_ts(admitted)}|{discharged}",
        f"DG1|1||{diagnosis}^I10||{_ts(admitted)}|A",
        "AL1|1|DA|70618^Penicillin^RXNORM|MO|Hives",
        f"IN1|1|{rng.choice(['MCR^MEDICARE', 'BCBS^BLUE CROSS', 'AET^AETNA'])}|"
        f"{rng.randrange(1000, 9999)}|PAYER INC|PO BOX 100^^{city}^{state}^{zipcode}||||"
        f"GRP{rng.randrange(100, 999)}|||||||{last}^{first}|SEL|{dob}",
    ]) + "\r"
    return head.encode("ascii"), tail.encode("ascii")


# --------------------------------------------------------------------------------------------
# Echo server


#: The fixed reply of the echo server (a small AA ACK).
ECHO_ACK = (START_BLOCK + b"MSH|^~\\&|ECHO|BENCH|||20240501000000||ACK|1|P|2.5.1\rMSA|AA|1\r"
            + TRAILER)


class _EchoProtocol(asyncio.Protocol):
    """Replies ECHO_ACK to each complete frame (counts frame trailers; no parsing)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        data = self._tail + data
        frames = data.count(TRAILER)
        self._tail = data[-1:] if data.endswith(b"\x1c") else b""
        if frames and self._transport is not None:
            self._transport.write(ECHO_ACK * frames)


async def _serve_echo(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoProtocol, host, port, reuse_address=True,
                                      backlog=512)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo server on {host}:{port}", flush=True)
    await stop.wait()
    server.close()


def run_echo_server(host: str, port: int) -> None:
    """Run the echo server in this process (uvloop when available) until SIGTERM."""
    install_uvloop()
    asyncio.run(_serve_echo(host, port))


class EchoServer:
    """The echo server as a child process (so it gets its own core, like the listener)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EchoServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.common", "echo", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent)
        wait_for_port("127.0.0.1", self.port, 15.0, self._proc)
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self._proc)


# --------------------------------------------------------------------------------------------
# Load client


class _ClientProtocol(asyncio.Protocol):
    """One MLLP client connection: hands reply payloads to whoever awaits :meth:`reply`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._replies: deque[bytes] = deque()
        self._waiter: asyncio.Future[bytes] | None = None
        self._closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            end = buf.find(TRAILER)
            if end < 0:
                return
            start = buf.find(START_BLOCK, 0, end)
            self._replies.append(bytes(buf[start + 1:end]))
            del buf[:end + 2]
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self._waiter = None
                waiter.set_result(self._replies.popleft())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = exc or ConnectionResetError("server closed the connection")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._closed)

    def reply(self) -> asyncio.Future[bytes]:
        """A future for the next reply frame's payload."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._replies:
            fut.set_result(self._replies.popleft())
        elif self._closed is not None:
            fut.set_exception(self._closed)
        else:
            self._waiter = fut
        return fut


@dataclass
class LoadResult:
    """What one load run measured.

    ``latencies`` are seconds from writing a frame to receiving its reply; ``behind`` is the
    worst lateness of a paced send against its schedule (0 when unpaced).
    """

    connections: int
    sent: int = 0
    elapsed: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    codes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    behind: float = 0.0
    stopped_by_deadline: bool = False

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, pct: float) -> float:
        return percentile(self.latencies, pct) * 1000.0

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures."""
        return {
            "connections": self.connections, "sent": self.sent,
            "elapsed_s": round(self.elapsed, 3), "rate_msg_s": round(self.rate, 1),
            "latency_ms": {"p50": round(self.percentile_ms(50), 3),
                           "p90": round(self.percentile_ms(90), 3),
                           "p99": round(self.percentile_ms(99), 3),
                           "max": round(self.percentile_ms(100), 3)},
            "codes": dict(self.codes), "errors": self.errors[:20],
            "behind_schedule_max_ms": round(self.behind * 1000, 3),
            "stopped_by_deadline": self.stopped_by_deadline,
        }


def ack_code(payload: bytes) -> str:
    """MSA-1 of a reply payload ('?' if it has no MSA segment)."""
    at = payload.find(b"MSA|")
    return payload[at + 4:at + 6].decode("ascii", "replace") if at >= 0 else "?"


async def run_load(host: str, port: int, *, connections: int, total: int,
                   next_message: Callable[[], bytes] | None = None, rate: float | None = None,
                   max_seconds: float = 120.0, reply_timeout: float = 30.0,
                   every: int = 0, on_progress: Callable[[int], None] | None = None,
                   message_for: Callable[[int], bytes | None] | None = None
                   ) -> LoadResult:
    """Send ``total`` messages over ``connections`` connections, each waiting for its reply.

    Arguments:
        next_message: the source of messages, shared by all connections.
        message_for: instead of ``next_message``, one source per connection:
            ``message_for(i)`` is connection ``i``'s next message, None when it has no more
            (so a patient's messages can stay in order on one connection).
        rate: total messages per second, spread evenly over the connections (None: as fast
            as replies allow).
        max_seconds: stop sending after this long whatever was sent (bounded runs).
        every, on_progress: call ``on_progress(done)`` each time ``done`` reaches a multiple
            of ``every`` (the soak run samples RSS this way).
    """
    loop = asyncio.get_running_loop()
    result = LoadResult(connections)
    protocols: list[_ClientProtocol] = []
    for _ in range(connections):
        _, proto = await loop.create_connection(_ClientProtocol, host, port)
        protocols.append(proto)
    remaining = [total]
    started = time.perf_counter()
    deadline = started + max_seconds
    interval = connections / rate if rate else 0.0
    latencies, codes, perf = result.latencies, result.codes, time.perf_counter

    async def sender(index: int, proto: _ClientProtocol) -> None:
        transport = proto.transport
        assert transport is not None
        due = started + interval * index / connections
        while remaining[0] > 0:
            now = perf()
            if now >= deadline:
                result.stopped_by_deadline = True
                return
            if interval:
                if due > now:
                    await asyncio.sleep(due - now)
                    now = perf()
                result.behind = max(result.behind, now - due)
                due += interval
            if message_for is not None:
                body = message_for(index)
                if body is None:
                    return
            else:
                assert next_message is not None
                body = next_message()
            remaining[0] -= 1
            frame = START_BLOCK + body + TRAILER
            reply = proto.reply()
            sent_at = perf()
            transport.write(frame)
            try:
                payload = await asyncio.wait_for(reply, reply_timeout)
            except (TimeoutError, ConnectionError, OSError) as exc:
                result.errors.append(f"connection {index}: {type(exc).__name__}: {exc}")
                return
            latencies.append(perf() - sent_at)
            codes[ack_code(payload)] += 1
            result.sent += 1
            if every and on_progress and result.sent % every == 0:
                on_progress(result.sent)

    try:
        await asyncio.gather(*(sender(i, p) for i, p in enumerate(protocols)))
    finally:
        result.elapsed = time.perf_counter() - started
        for proto in protocols:
            if proto.transport is not None:
                proto.transport.close()
    return result


# --------------------------------------------------------------------------------------------
# Processes and measurements


def percentile(values: Sequence[float] | array[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return float(ordered[rank - 1])


def read_rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (VmRSS in /proc/PID/status), None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (/proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's RSS on an interval (asyncio task); keeps start, peak and last."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.start = read_rss_mb(pid) or 0.0
        self.peak = self.start
        self.last = self.start
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> float:
        rss = read_rss_mb(self.pid)
        if rss is not None:
            self.last = rss
            self.peak = max(self.peak, rss)
        return self.last

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        self.sample()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``host:port`` accepts connections; raise if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} "
                               "before opening its port")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> int | None:
    """SIGTERM, wait, then SIGKILL. Returns the exit code (None if there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when uvloop is installed."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


# --------------------------------------------------------------------------------------------
# Output


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Print (and return) a pipe table with aligned columns."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    text = "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])
    print(text, flush=True)
    return text


def _main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.common")
    sub = p.add_subparsers(dest="command", required=True)
    echo = sub.add_parser("echo", help="run the MLLP echo server")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=int, required=True)
    sample = sub.add_parser("sample", help="print a few generated messages")
    sample.add_argument("-n", type=int, default=4)
    args = p.parse_args(argv)
    if args.command == "echo":
        run_echo_server(args.host, args.port)
    else:
        gen = AdtGenerator("SAMPLE")
        for _ in range(args.n):
            msg = gen.message()
            print(f"--- {len(msg)} bytes")
            print(msg.decode("ascii").replace("\r", "\n"))


if __name__ == "__main__":
    _main()
