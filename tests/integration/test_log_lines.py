"""Every log line a process writes is one JSON object, the libraries' records too (aiokafka,
faust and mode, uvicorn, SQLAlchemy log through Python's ``logging``): a log shipper reading
JSON lines loses nothing and mixes nothing. Before, the libraries' records were plain text on
stderr (listener, web) or mode's coloured text on stdout (worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from transcare.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON log line: {line[:200]!r}") from None
    return parsed


def test_a_library_record_is_a_json_line_with_its_logger() -> None:
    code = ("import logging; from transcare.logs import configure_logging; "
            "configure_logging('INFO', 'listener'); "
            "logging.getLogger('aiokafka').error('Unable connect to %r', 'h:1'); "
            "logging.getLogger('aiokafka').info('below the libraries\\' level'); "
            "logging.getLogger('sqlalchemy.pool').warning('x', exc_info=ValueError('bad'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=True)
    assert done.stdout == ""
    records = _json_lines(done.stderr)
    assert [(r["logger"], r["level"], r["proc"]) for r in records] == [
        ("aiokafka", "error", "listener"), ("sqlalchemy.pool", "warning", "listener")]
    assert records[0]["event"] == "Unable connect to 'h:1'"
    assert "ValueError: bad" in str(records[1]["exception"])


def test_the_workers_library_records_are_json_lines_on_stderr(tmp_path: Path) -> None:
    """The worker runs under mode, which sets up logging itself: without a broker, aiokafka's
    and the app's crash records are JSON lines on stderr; stdout holds the start line only."""
    env = {**os.environ, "TRANSCARE_DATA_DIR": str(tmp_path),
           "TRANSCARE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
           "TRANSCARE_DATABASE_URL": f"sqlite:///{tmp_path / 'transcare.db'}"}
    done = subprocess.run([sys.executable, "-m", "transcare.cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0  # no broker: the worker stops, as before
    assert [line for line in done.stdout.splitlines() if line.strip()
            and not line.startswith("worker (")] == []
    loggers = {str(r.get("logger")) for r in _json_lines(done.stderr)}
    assert "aiokafka" in loggers, loggers


def test_at_debug_the_libraries_records_below_warning_come_through() -> None:
    code = ("import logging; from transcare.logs import configure_logging; "
            "configure_logging('DEBUG', 'web'); logging.getLogger('uvicorn.error').info('hi')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=True)
    assert [(r["logger"], r["level"], r["event"]) for r in _json_lines(done.stderr)] == [
        ("uvicorn.error", "info", "hi")]
