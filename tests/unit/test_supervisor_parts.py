"""Which processes `transcare up` runs: one transitions and follow-up worker by default; on
PostgreSQL as many as TRANSCARE_STREAM_WORKERS asks for, in one consumer group."""

from __future__ import annotations

from pathlib import Path

import pytest

from transcare.settings import Settings, SettingsError, load_settings
from transcare.supervisor import is_worker, parts

PG = "postgresql://tc@db.example/transcare"


def test_sqlite_runs_one_transitions_and_followup_worker(tmp_path: Path) -> None:
    assert list(parts(Settings(data_dir=tmp_path))) == ["normaliser", "worker", "listener", "web"]
    many = Settings(data_dir=tmp_path, stream_workers=3)
    assert list(parts(many)) == ["normaliser", "worker", "listener", "web"]


def test_postgresql_runs_one_unless_told_more() -> None:
    assert list(parts(Settings(database_url=PG))) == ["normaliser", "worker", "listener", "web"]
    found = parts(Settings(database_url=PG, stream_workers=3))
    assert list(found) == ["normaliser", "worker", "worker2", "worker3", "listener", "web"]
    assert found["worker3"] == found["worker"] == ("worker", "--stages", "transitions,followup")


def test_the_count_comes_from_the_environment() -> None:
    settings = load_settings(env={"TRANSCARE_DATABASE_URL": PG, "TRANSCARE_STREAM_WORKERS": "2"})
    assert list(parts(settings))[:3] == ["normaliser", "worker", "worker2"]


def test_the_broker_restart_restarts_every_consumer() -> None:
    assert [n for n in ("normaliser", "worker", "worker2", "listener", "web") if is_worker(n)] == [
        "normaliser", "worker", "worker2"]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_count_below_one_or_not_a_number_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="TRANSCARE_STREAM_WORKERS"):
        load_settings(env={"TRANSCARE_STREAM_WORKERS": value})
