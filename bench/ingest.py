"""Listener ingest benchmark: durable throughput, ACK latency at a fixed rate, memory.

Usage::

    python -m bench.ingest                 # default run, about 1 minute on 2 cores
    python -m bench.ingest --quick         # smoke run, about 20 s
    python -m bench.ingest --soak 1000000  # plus the memory soak (several minutes)
    python -m bench.ingest --database-url postgresql://postgres@127.0.0.1:5432/test

Phases (all traffic goes to 127.0.0.1, every phase is bounded by count and time):

1. Baseline: an asyncio MLLP echo server (own process, uvloop, a fixed small ACK per frame)
   measured with the same client code, 1 and 8 connections.
2. Durable ingest: embedded broker, fresh data dir, ``transcare db upgrade``, then
   ``transcare listener``; 8 senders each waiting for their ACK, ``--messages`` in total.
   Checks every reply is AA and the ``messages`` table holds exactly what was sent.
3. ACK latency at ``--rate`` messages/s paced over 8 connections for ``--seconds``.
4. Memory: listener RSS (start, peak, end) over the whole run; with ``--soak N`` a long run
   sampling RSS every 50,000 messages.

The table is printed at the end and the figures are written to
``bench/results/ingest-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    AdtGenerator,
    EchoServer,
    LoadResult,
    RssSampler,
    free_port,
    install_uvloop,
    print_table,
    read_cpu_seconds,
    run_load,
    stop_process,
    wait_for_port,
)

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results" / "ingest-latest.json"
ROOT = Path(__file__).resolve().parent.parent
SENDERS = 8
SOAK_SAMPLE_EVERY = 50_000
WARMUP = 400

TARGET_RATE = 5_000.0  # durable messages/s with 8 senders
TARGET_P99_MS = 20.0  # ACK latency p99 at 1,000 messages/s
TARGET_RSS_MB = 150.0  # listener RSS, flat


# --------------------------------------------------------------------------------------------
# Options


@dataclass
class Options:
    messages: int = 20_000
    echo_messages: int = 40_000
    rate: float = 1_000.0
    seconds: float = 10.0
    soak: int = 0
    soak_every: int = SOAK_SAMPLE_EVERY
    database_url: str = ""
    max_phase_seconds: float = 60.0
    keep: bool = False
    quick: bool = False
    listener_gather_ms: float | None = None


def add_gather_option(p: argparse.ArgumentParser) -> None:
    """``--listener-gather-ms``, shared with bench/e2e: to compare the group commit on and off."""
    p.add_argument("--listener-gather-ms", type=float, default=None,
                   help="the listener's group-commit wait (TRANSCARE_LISTENER_GATHER_MS; "
                        "default: the service's default, 1 ms; 0 turns gathering off)")


def gather_env(gather_ms: float | None) -> dict[str, str]:
    """The service's environment for ``--listener-gather-ms`` (nothing when not given)."""
    return {} if gather_ms is None else {"TRANSCARE_LISTENER_GATHER_MS": f"{gather_ms:g}"}


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=None,
                   help="messages in the durable-ingest phase (default 20000)")
    p.add_argument("--rate", type=float, default=1000.0,
                   help="messages/s in the fixed-rate latency phase (default 1000)")
    p.add_argument("--seconds", type=float, default=None,
                   help="length of the fixed-rate phase in seconds (default 10)")
    p.add_argument("--soak", type=int, default=0, metavar="N",
                   help="also send N messages, sampling listener RSS every 50,000 (default off)")
    p.add_argument("--soak-every", type=int, default=SOAK_SAMPLE_EVERY, metavar="N",
                   help="RSS sample interval of the soak, in messages (default 50000)")
    p.add_argument("--database-url", default="",
                   help="run the listener on this database (e.g. PostgreSQL) instead of a "
                        "fresh SQLite file; its messages rows are deleted first")
    p.add_argument("--max-phase-seconds", type=float, default=60.0,
                   help="stop any load phase after this long (default 60)")
    add_gather_option(p)
    p.add_argument("--keep", action="store_true", help="keep the temp data dir and logs")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run (~20 s)")
    a = p.parse_args(argv)
    opts = Options(rate=a.rate, soak=a.soak, soak_every=max(1, a.soak_every),
                   database_url=a.database_url, max_phase_seconds=a.max_phase_seconds,
                   keep=a.keep, quick=a.quick, listener_gather_ms=a.listener_gather_ms)
    if a.quick:
        opts.messages, opts.echo_messages, opts.seconds = 3_000, 8_000, 3.0
    if a.messages is not None:
        opts.messages = a.messages
    if a.seconds is not None:
        opts.seconds = a.seconds
    return opts


# --------------------------------------------------------------------------------------------
# The system under test


class Listener:
    """``transcare listener`` as a child process on a free port, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**env, "TRANSCARE_MLLP_PORT": str(self.port), "TRANSCARE_MLLP_HOST": HOST}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.stop_seconds = 0.0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*transcare_command(), "listener", "--mllp-port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=ROOT)
        wait_for_port(HOST, self.port, 60.0, self.proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        started = time.monotonic()
        self.exit_code = stop_process(self.proc, timeout=20.0)
        self.stop_seconds = time.monotonic() - started
        return self.exit_code

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def transcare_command() -> list[str]:
    """The ``transcare`` console script next to this interpreter, else ``-m transcare.cli``."""
    script = Path(sys.executable).parent / "transcare"
    return [str(script)] if script.exists() else [sys.executable, "-m", "transcare.cli"]


def listener_env(data_dir: Path, bootstrap: str, database_url: str,
                 gather_ms: float | None = None) -> dict[str, str]:
    """A clean environment: no inherited TRANSCARE_* settings, only the benchmark's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCARE_")}
    env.update({"TRANSCARE_DATA_DIR": str(data_dir), "TRANSCARE_KAFKA_BOOTSTRAP": bootstrap})
    if database_url:
        env["TRANSCARE_DATABASE_URL"] = database_url
    return env | gather_env(gather_ms)


def db_upgrade(env: dict[str, str]) -> None:
    out = subprocess.run([*transcare_command(), "db", "upgrade"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"transcare db upgrade failed ({out.returncode}):\n"
                           f"{out.stdout}{out.stderr}")


class MessageTable:
    """Counts rows of the ``messages`` table (sqlite3 for SQLite, asyncpg for PostgreSQL)."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        # On SQLite the listener's message store is a file of its own beside transcare.db.
        self.sqlite_path = None if database_url else data_dir / "transcare-messages.db"
        self.database_url = database_url

    def _pg_dsn(self) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def query(self, sql: str) -> int:
        if self.sqlite_path is not None:
            with sqlite3.connect(self.sqlite_path, timeout=30) as con:
                return int(con.execute(sql).fetchone()[0])

        async def run() -> int:
            import asyncpg

            con = await asyncpg.connect(self._pg_dsn())
            try:
                return int(await con.fetchval(sql))
            finally:
                await con.close()

        return asyncio.run(run())

    def counts(self) -> dict[str, int]:
        return {
            "rows": self.query("SELECT count(*) FROM messages"),
            "accepted_or_processed": self.query(
                "SELECT count(*) FROM messages WHERE status IN ('accepted', 'processed')"),
            "unpublished": self.query(
                "SELECT count(*) FROM messages WHERE published_at IS NULL "
                "AND status <> 'rejected'"),
        }

    def clear(self) -> int:
        """Delete every row (PostgreSQL runs reuse one database); returns rows deleted."""
        async def run() -> int:
            import asyncpg

            con = await asyncpg.connect(self._pg_dsn())
            try:
                status = await con.execute("DELETE FROM messages")
                return int(status.split()[-1])
            finally:
                await con.close()

        return asyncio.run(run())


# --------------------------------------------------------------------------------------------
# Phases


@dataclass
class Report:
    """Everything measured; becomes the JSON file and the table."""

    options: Options
    echo1: LoadResult | None = None
    echo8: LoadResult | None = None
    durable: LoadResult | None = None
    paced: LoadResult | None = None
    soak: LoadResult | None = None
    soak_rss: list[tuple[int, float]] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    table_check: dict[str, Any] = field(default_factory=dict)
    final_check: dict[str, Any] = field(default_factory=dict)
    listener: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def phase_echo(opts: Options, report: Report) -> None:
    say("phase 1: MLLP echo baseline")
    with EchoServer() as echo:
        gen = AdtGenerator("ECHO")
        report.echo1 = asyncio.run(run_load(
            HOST, echo.port, connections=1, total=opts.echo_messages // 2,
            next_message=gen.message, max_seconds=opts.max_phase_seconds))
        say(f"  1 connection : {report.echo1.rate:,.0f} msg/s")
        report.echo8 = asyncio.run(run_load(
            HOST, echo.port, connections=SENDERS, total=opts.echo_messages,
            next_message=gen.message, max_seconds=opts.max_phase_seconds))
        say(f"  8 connections: {report.echo8.rate:,.0f} msg/s")


async def phase_listener(opts: Options, report: Report, listener: Listener,
                         table: MessageTable) -> None:
    """Phases 2-4 against one listener process, with its RSS sampled throughout."""
    run_id = datetime.now(UTC).strftime("B%H%M%S")
    gen = AdtGenerator(run_id)
    pid = listener.pid
    cpu_start = read_cpu_seconds(pid) or 0.0
    with RssSampler(pid) as rss:
        report.rss["start_mb"] = rss.start
        warm = await run_load(HOST, listener.port, connections=SENDERS, total=WARMUP,
                              next_message=gen.message, max_seconds=opts.max_phase_seconds)
        check_replies("warm-up", warm, report)

        say(f"phase 2: durable ingest, {SENDERS} senders, {opts.messages:,} messages")
        cpu0 = read_cpu_seconds(pid) or 0.0
        report.durable = await run_load(
            HOST, listener.port, connections=SENDERS, total=opts.messages,
            next_message=gen.message, max_seconds=opts.max_phase_seconds)
        durable_cpu = (read_cpu_seconds(pid) or 0.0) - cpu0
        report.cpu["durable_listener_cpu_pct"] = 100 * durable_cpu / report.durable.elapsed
        check_replies("durable", report.durable, report)
        say(f"  {report.durable.rate:,.0f} msg/s, p99 {report.durable.percentile_ms(99):.1f} ms,"
            f" listener CPU {report.cpu['durable_listener_cpu_pct']:.0f}%")
        expected = warm.sent + report.durable.sent
        counts = await asyncio.to_thread(table.counts)
        report.table_check = {"expected": expected, **counts, "ok": counts["rows"] == expected}
        if not report.table_check["ok"]:
            report.problems.append(f"messages table holds {counts['rows']} rows after the "
                                   f"durable phase, expected {expected}")
        report.rss["after_durable_mb"] = rss.sample()

        say(f"phase 3: ACK latency at {opts.rate:,.0f} msg/s for {opts.seconds:g} s")
        await asyncio.sleep(1.0)  # let the relay catch up so phase 3 starts quiet
        report.paced = await run_load(
            HOST, listener.port, connections=SENDERS, total=int(opts.rate * opts.seconds),
            next_message=gen.message, rate=opts.rate,
            max_seconds=min(opts.max_phase_seconds, opts.seconds * 1.5 + 5))
        check_replies("fixed rate", report.paced, report, paced=True)
        say(f"  achieved {report.paced.rate:,.0f} msg/s, p50 {report.paced.percentile_ms(50):.2f}"
            f" ms, p99 {report.paced.percentile_ms(99):.2f} ms")

        if opts.soak:
            say(f"phase 4: soak, {opts.soak:,} messages, RSS every {opts.soak_every:,}")
            report.soak_rss.append((0, rss.sample()))

            def sample(done: int) -> None:
                report.soak_rss.append((done, rss.sample()))
                say(f"  {done:>9,} messages: RSS {report.soak_rss[-1][1]:.1f} MB")

            report.soak = await run_load(
                HOST, listener.port, connections=SENDERS, total=opts.soak,
                next_message=gen.message, max_seconds=max(600.0, opts.soak / 500),
                every=opts.soak_every, on_progress=sample)
            check_replies("soak", report.soak, report)

        # Let the relay drain so the end figures include publishing everything to Kafka.
        sent = gen.count
        report.final_check = await wait_for_relay(table, sent, timeout=30.0)
        report.final_check["generated"] = sent
        report.rss["end_mb"] = rss.sample()
        report.rss["peak_mb"] = rss.peak
    report.cpu["listener_total_cpu_s"] = (read_cpu_seconds(pid) or 0.0) - cpu_start
    if not listener.alive():
        report.problems.append("the listener process died during the run")


async def wait_for_relay(table: MessageTable, expected: int, timeout: float) -> dict[str, Any]:
    """Poll until every stored message is published to Kafka (or ``timeout``)."""
    started = time.monotonic()
    counts = await asyncio.to_thread(table.counts)
    while counts["unpublished"] and time.monotonic() - started < timeout:
        await asyncio.sleep(0.5)
        counts = await asyncio.to_thread(table.counts)
    return {**counts, "expected": expected, "rows_ok": counts["rows"] == expected,
            "relay_drain_s": round(time.monotonic() - started, 1)}


def check_replies(phase: str, result: LoadResult, report: Report, paced: bool = False) -> None:
    """Record misbehaviour: non-AA replies, sender errors, an unpaced phase cut by its limit.

    A paced phase cut by its time limit only means the listener could not keep the rate; the
    table shows that through the achieved rate and the lateness.
    """
    not_aa = result.sent - result.codes.get("AA", 0)
    if not_aa:
        report.problems.append(f"{phase}: {not_aa} replies were not AA: {dict(result.codes)}")
    if result.errors:
        report.problems.append(f"{phase}: {len(result.errors)} sender errors, first: "
                               f"{result.errors[0]}")
    if result.stopped_by_deadline and not paced:
        report.problems.append(f"{phase}: stopped by the time limit after {result.sent} "
                               "messages")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Output


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table_rows(report: Report) -> list[list[str]]:
    o, rows = report.options, []
    e1, e8, d, p = report.echo1, report.echo8, report.durable, report.paced
    if e1 and e8:
        rows.append(["echo baseline, 1 connection", f"{e1.rate:,.0f} msg/s", "", ""])
        rows.append(["echo baseline, 8 connections", f"{e8.rate:,.0f} msg/s", "", ""])
    if d:
        ratio = f"{d.rate / e8.rate:.2f} x echo-8" if e8 and e8.rate else ""
        rows.append([f"durable ingest, {SENDERS} senders, {d.sent:,} msgs", f"{d.rate:,.0f} msg/s",
                     f">= {TARGET_RATE:,.0f} msg/s", f"{_mark(d.rate >= TARGET_RATE)} ({ratio})"])
        rows.append(["  ACK latency p50 / p99 / max",
                     f"{d.percentile_ms(50):.2f} / {d.percentile_ms(99):.2f} / "
                     f"{d.percentile_ms(100):.1f} ms", "", ""])
        aa = d.codes.get("AA", 0)
        rows.append(["  replies AA", f"{aa:,} / {d.sent:,}", "all AA",
                     _mark(aa == d.sent and not d.errors)])
        t = report.table_check
        if t:
            rows.append(["  messages table rows (incl. warm-up)",
                         f"{t['rows']:,} (expected {t['expected']:,})", "exact",
                         _mark(bool(t["ok"]))])
        cpu = report.cpu.get("durable_listener_cpu_pct")
        if cpu is not None:
            rows.append(["  listener CPU during phase", f"{cpu:.0f}% of one core", "", ""])
    if p:
        rows.append([f"ACK latency at {o.rate:,.0f} msg/s, {o.seconds:g} s (achieved "
                     f"{p.rate:,.0f}/s)",
                     f"p50 {p.percentile_ms(50):.2f} ms, p99 {p.percentile_ms(99):.2f} ms",
                     f"p99 <= {TARGET_P99_MS:g} ms",
                     _mark(p.percentile_ms(99) <= TARGET_P99_MS and not p.errors)])
        rows.append(["  max / worst lateness vs schedule",
                     f"{p.percentile_ms(100):.1f} ms / {p.behind * 1000:.1f} ms", "", ""])
    if report.rss:
        r = report.rss
        flat = soak_growth(report)
        rss_ok = r.get("peak_mb", 0) <= TARGET_RSS_MB and (flat is None or flat <= 10.0)
        rows.append(["listener RSS start / peak / end",
                     f"{r.get('start_mb', 0):.0f} / {r.get('peak_mb', 0):.0f} / "
                     f"{r.get('end_mb', 0):.0f} MB", f"<= {TARGET_RSS_MB:g} MB flat",
                     _mark(rss_ok) + ("" if flat is not None else " (no soak)")])
    if report.soak:
        s = report.soak
        growth = soak_growth(report)
        rows.append([f"soak, {s.sent:,} msgs", f"{s.rate:,.0f} msg/s, p99 "
                     f"{s.percentile_ms(99):.1f} ms", "", ""])
        rows.append([f"  RSS after first {report.options.soak_every:,} -> last sample",
                     f"{report.soak_rss[1][1] if len(report.soak_rss) > 1 else 0:.0f} -> "
                     f"{report.soak_rss[-1][1]:.0f} MB (+{growth or 0:.1f} MB)",
                     "flat", _mark((growth or 0) <= 10.0)])
    f = report.final_check
    if f:
        published = f["rows"] - f["unpublished"]
        rows.append(["end: rows stored / published to Kafka",
                     f"{f['rows']:,} / {published:,} (sent {f['expected']:,})", "all",
                     _mark(bool(f["rows_ok"]) and not f["unpublished"])])
    lst = report.listener
    if lst:
        rows.append(["listener shutdown (SIGTERM)",
                     f"exit {lst.get('exit_code')} in {lst.get('stop_s', 0):.1f} s", "exit 0",
                     _mark(lst.get("exit_code") == 0)])
    return rows


def soak_growth(report: Report) -> float | None:
    """RSS growth from the first soak sample after 0 to the last (None without a soak)."""
    if len(report.soak_rss) < 3:
        return None
    return report.soak_rss[-1][1] - report.soak_rss[1][1]


def to_json(report: Report) -> dict[str, Any]:
    def res(r: LoadResult | None) -> dict[str, Any] | None:
        return r.summary() if r else None

    e8, d = report.echo8, report.durable
    return {
        "benchmark": "ingest",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "options": vars(report.options),
        "database": "postgresql" if report.options.database_url else "sqlite",
        "echo_1": res(report.echo1), "echo_8": res(report.echo8),
        "durable": res(d), "durable_vs_echo8": round(d.rate / e8.rate, 3) if d and e8 and e8.rate
        else None,
        "fixed_rate": res(report.paced), "soak": res(report.soak),
        "soak_rss_mb": [[n, round(v, 1)] for n, v in report.soak_rss],
        "rss_mb": {k: round(v, 1) for k, v in report.rss.items()},
        "cpu": {k: round(v, 1) for k, v in report.cpu.items()},
        "table_check": report.table_check, "final_check": report.final_check,
        "listener": report.listener, "problems": report.problems,
        "targets": {"durable_msg_s": TARGET_RATE, "p99_ms_at_rate": TARGET_P99_MS,
                    "rss_mb": TARGET_RSS_MB},
    }


# --------------------------------------------------------------------------------------------
# Main


def run(opts: Options) -> Report:
    from transcare.broker import EmbeddedBroker
    from transcare.broker import free_port as broker_port

    report = Report(opts)
    phase_echo(opts, report)

    work = Path(tempfile.mkdtemp(prefix="transcare-bench-"))
    data_dir = work / "data"
    broker = EmbeddedBroker(broker_port(), work / "broker.log")
    listener: Listener | None = None
    try:
        say("starting the embedded broker, migrating, starting the listener")
        broker.start()
        env = listener_env(data_dir, broker.bootstrap, opts.database_url,
                           opts.listener_gather_ms)
        db_upgrade(env)
        table = MessageTable(data_dir, opts.database_url)
        if opts.database_url:
            say(f"  deleted {table.clear():,} rows from messages")
        listener = Listener(env, work / "listener.log")
        listener.start()
        install_uvloop()
        try:
            asyncio.run(phase_listener(opts, report, listener, table))
        except Exception as exc:  # report what happened, with the listener's own words
            report.problems.append(f"run aborted: {type(exc).__name__}: {exc}")
    finally:
        if listener is not None:
            died = not listener.alive()
            report.listener = {"exit_code": listener.stop(), "stop_s": listener.stop_seconds,
                               "died_during_run": died, "log": str(listener.log_path)}
            if died or listener.exit_code != 0:
                report.problems.append(f"listener exit code {listener.exit_code}; log tail:\n"
                                       f"{listener.log_tail()}")
        broker.stop()
        if not opts.keep and not report.problems:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work} (logs and data)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    install_uvloop()
    started = time.monotonic()
    report = run(opts)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(to_json(report), indent=2) + "\n")
    db = "PostgreSQL" if opts.database_url else "SQLite"
    print(f"\ntranscare ingest benchmark ({db}, {os.cpu_count()} CPUs, "
          f"{time.monotonic() - started:.0f} s)\n")
    print_table(["figure", "result", "target", "verdict"], table_rows(report))
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
