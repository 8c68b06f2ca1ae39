"""Shared fixtures: the public corpus, a real embedded broker, and the service as processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.helpers import POSTGRES_ENV, fresh_postgres_database
from tests.receivers import Receiver, SmtpServer, run_receiver, run_smtp
from transcare.broker import EmbeddedBroker, free_port, port_open

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture
async def empty_postgres_url() -> AsyncIterator[str]:
    """A database with no tables yet, created for the test on the PostgreSQL server named by
    ``TRANSCARE_TEST_POSTGRES_URL`` (``.ci/run`` sets it) and dropped after; without that
    server the test reports as not run, as every PostgreSQL test."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(f"PostgreSQL tests did not run: set {POSTGRES_ENV}")
    async with fresh_postgres_database(server, "transcare_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind with no tables yet: a SQLite file, or ``empty_postgres_url``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("empty_postgres_url"))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """``../shared/corpus``: the public HL7 samples the tests run against."""
    if not (CORPUS / "msgs").is_dir():
        pytest.fail(f"the shared HL7 corpus is missing: expected it at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Kafka-compatible broker (Tansu, memory storage) for the whole session."""
    b = EmbeddedBroker(free_port(), tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    yield b
    b.stop()


def service_env(data_dir: Path, bootstrap: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCARE_")}
    env.update({
        "TRANSCARE_DATA_DIR": str(data_dir),
        "TRANSCARE_KAFKA_BOOTSTRAP": bootstrap,
        "TRANSCARE_BROKER_EMBEDDED": "true",
        "TRANSCARE_KAFKA_REBALANCE_TIMEOUT": "2",
        "TRANSCARE_KAFKA_SESSION_TIMEOUT": "6",
        "TRANSCARE_LOG_LEVEL": "WARNING",
        # Each test gets its own consumer group, so tests sharing the broker never interfere.
        "TRANSCARE_CONSUMER_GROUP": f"transcare-{data_dir.name}",
    })
    env.update(extra)
    return env


@dataclass
class Service:
    """The listener and worker as real processes over one data dir and the session broker."""

    data_dir: Path
    env: dict[str, str]
    mllp_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.data_dir / 'transcare.db'}"

    @property
    def message_store(self) -> Path:
        """The SQLite file the listener stores messages in (beside the database)."""
        return self.data_dir / "transcare-messages.db"

    def start(self, part: str, name: str | None = None) -> None:
        """Start ``transcare PART``; ``name`` tells a second copy apart (e.g. ``worker2``)."""
        log = open(self.data_dir / f"{name or part}.log", "ab")  # noqa: SIM115
        self.procs[name or part] = subprocess.Popen(
            [sys.executable, "-m", "transcare.cli", part], env=self.env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        if part == "listener":
            self._wait_port()

    def _wait_port(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not port_open("127.0.0.1", self.mllp_port):
            proc = self.procs["listener"]
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (self.data_dir / "listener.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"listener did not start (exit {proc.poll()}):\n{log}")
            time.sleep(0.05)

    def kill(self, part: str) -> None:
        proc = self.procs.pop(part)
        proc.kill()
        proc.wait()

    def stop(self, part: str) -> None:
        proc = self.procs.pop(part, None)
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for part in list(self.procs):
            self.stop(part)


def make_service(data_dir: Path, bootstrap: str, **extra: str) -> Service:
    port = free_port()
    env = service_env(data_dir, bootstrap, TRANSCARE_MLLP_PORT=str(port),
                      TRANSCARE_MLLP_HOST="127.0.0.1", **extra)
    subprocess.run([sys.executable, "-m", "transcare.cli", "db", "upgrade"], env=env,
                   check=True, capture_output=True)
    return Service(data_dir, env, port)


@pytest.fixture
def service(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[Service]:
    """A migrated data dir with the listener and the worker running."""
    svc = make_service(tmp_path, broker.bootstrap)
    svc.start("worker")
    svc.start("listener")
    yield svc
    svc.stop_all()


@pytest.fixture
def broker_bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free port, keeping what it receives."""
    yield from run_smtp()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP webhook receiver (uvicorn) on a free port, keeping what it receives."""
    async for rec in run_receiver():
        yield rec
