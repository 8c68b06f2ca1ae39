"""Which processes `transcare up` runs: one transitions worker on SQLite, two on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from transcare.settings import Settings
from transcare.supervisor import WORKERS, parts


def test_sqlite_runs_one_transitions_and_followup_worker(tmp_path: Path) -> None:
    assert list(parts(Settings(data_dir=tmp_path))) == ["normaliser", "worker", "listener", "web"]


def test_postgresql_runs_two_in_one_consumer_group() -> None:
    found = parts(Settings(database_url="postgresql://tc@db.example/transcare"))
    assert list(found) == ["normaliser", "worker", "worker2", "listener", "web"]
    assert found["worker2"] == found["worker"] == ("worker", "--stages", "transitions,followup")
    assert {"normaliser", "worker", "worker2"} <= set(WORKERS)  # restarted with the broker
