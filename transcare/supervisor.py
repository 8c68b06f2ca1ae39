"""``transcare up``: the embedded default, every part on one machine, started and stopped together.

Starts the embedded broker (unless ``TRANSCARE_KAFKA_BOOTSTRAP`` names a cluster), migrates the
database, then runs ``transcare listener``, two workers (``--stages normaliser`` and
``--stages transitions,followup``: the normaliser on a core of its own measured faster, see
docs/performance.md) and ``web`` as child processes sharing one settings environment and one
Prometheus multiprocess directory. A child that dies is restarted (the store makes that
lossless); Ctrl-C or SIGTERM stops everything in order.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from transcare.broker import EmbeddedBroker, free_port, port_open
from transcare.db.engine import is_sqlite
from transcare.db.migrate import upgrade_service
from transcare.settings import Settings

log = structlog.get_logger("transcare.up")
# name -> the transcare command that runs it
PARTS: dict[str, tuple[str, ...]] = {
    "normaliser": ("worker", "--stages", "normaliser"),
    "worker": ("worker", "--stages", "transitions,followup"),
    "listener": ("listener",),
    "web": ("web",),
}


def parts(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The processes ``up`` runs, in start order. On PostgreSQL, ``stream_workers``
    (``TRANSCARE_STREAM_WORKERS``, default 1) transitions and follow-up workers share one
    consumer group: ``worker``, ``worker2``, ... Since a worker reads and writes a batch's
    episodes and tasks at once, one is faster than two on a 2-core machine (bench/e2e, the
    same VM: 618-724 vs 555 msg/s end to end, processing lag p99 at 500 msg/s 1.7-1.9 vs
    2.5-5.4 s; before, two were faster, 848 vs 712); more cores
    are what a second one needs. On SQLite a second one would only queue for the database's
    one write lock."""
    count = 1 if is_sqlite(settings.effective_database_url) else max(1, settings.stream_workers)
    found: dict[str, tuple[str, ...]] = {}
    for name, command in PARTS.items():
        found[name] = command
        if name == "worker":
            found.update({f"worker{n}": command for n in range(2, count + 1)})
    return found


def is_worker(name: str) -> bool:
    """A part that consumes from the broker (restarted with it)."""
    return name == "normaliser" or name.startswith("worker")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Stop(Exception):
    pass


def _raise_stop(*_: object) -> None:
    raise _Stop


def run(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = _start_broker(settings)
    children: list[Child] = []
    try:
        upgrade_service(settings)
        env = _child_env(settings, broker)
        children = [Child(name, [sys.executable, "-m", "transcare.cli", *command], env)
                    for name, command in parts(settings).items()]
        for child in children:
            child.start()
        _announce(settings, broker)
        _watch(children, broker)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        if broker:
            broker.stop()
        print("transcare stopped", flush=True)
    return 0


def _start_broker(settings: Settings) -> EmbeddedBroker | None:
    if settings.kafka_bootstrap:
        return None
    port = settings.broker_port
    if port_open("127.0.0.1", port):
        port = free_port()
    broker = EmbeddedBroker(port, settings.data_dir / "logs" / "broker.log")
    broker.start()
    return broker


def _child_env(settings: Settings, broker: EmbeddedBroker | None) -> dict[str, str]:
    metrics_dir = Path(settings.metrics_dir or settings.data_dir / "metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env = dict(os.environ)
    env.update({
        "TRANSCARE_DATA_DIR": str(settings.data_dir.resolve()),
        "TRANSCARE_DATABASE_URL": settings.effective_database_url,
        "TRANSCARE_MLLP_PORT": str(settings.mllp_port),
        "TRANSCARE_HTTP_PORT": str(settings.http_port),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    })
    if broker:
        env["TRANSCARE_KAFKA_BOOTSTRAP"] = broker.bootstrap
        env["TRANSCARE_BROKER_EMBEDDED"] = "true"
    return env


def _announce(settings: Settings, broker: EmbeddedBroker | None) -> None:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host
    kafka = f"embedded broker on {broker.bootstrap}" if broker else settings.kafka_bootstrap
    print("transcare is up:", flush=True)
    print(f"  MLLP listener   {settings.mllp_host}:{settings.mllp_port}", flush=True)
    print(f"  web and API     http://{host}:{settings.http_port}/", flush=True)
    print(f"  Kafka           {kafka}", flush=True)
    print(f"  database        {settings.effective_database_url.split('://')[0]} "
          f"({settings.data_dir.resolve()})", flush=True)
    print("  stop with Ctrl-C", flush=True)


def _watch(children: list[Child], broker: EmbeddedBroker | None) -> None:
    while True:
        time.sleep(0.5)
        if broker and not broker.running():
            _restart_broker(broker, children)
        for child in children:
            if not child.alive():
                _restart(child)


def _restart_broker(broker: EmbeddedBroker, children: list[Child]) -> None:
    """Restart the broker, then the workers.

    The embedded broker keeps nothing across a restart: topics, records and the consumer
    group's committed offsets are gone. The listener's relay republishes what was not yet
    processed; the workers are restarted so that they join the new groups from the start
    instead of waiting at fetch positions the new topics never reach.
    """
    log.error("up.broker_exited", action="restart broker and workers")
    broker.start()
    for child in children:
        if is_worker(child.name):
            child.stop()
            child.start()


def _restart(child: Child) -> None:
    now = time.monotonic()
    child.restarts = [t for t in child.restarts if now - t < 60] + [now]
    code = child.proc.returncode if child.proc else None
    if len(child.restarts) > 5:
        log.error("up.giving_up", part=child.name, exit_code=code)
        raise _Stop
    log.error("up.part_exited", part=child.name, exit_code=code, action="restart")
    time.sleep(min(2.0 ** len(child.restarts) / 4, 5.0))
    child.start()
