"""Settings from TRANSCARE_* variables and the TOML file; bad values name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from transcare.settings import Settings, SettingsError, load_settings


def test_defaults_are_documented_values(tmp_path: Path) -> None:
    s = load_settings({"TRANSCARE_DATA_DIR": str(tmp_path)})
    assert (s.mllp_port, s.http_port, s.max_message_bytes) == (2575, 8080, 1 << 20)
    assert s.embedded_broker and s.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert s.effective_republish_after == 60.0


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / "transcare.toml").write_text(
        '[listener]\nmllp_port = 3000\nrequire_known_facility = true\n'
        '[facilities.GENHOSP]\ntime_zone = "America/Chicago"\nallowed_sources = ["10.0.0.5"]\n')
    s = load_settings({"TRANSCARE_DATA_DIR": str(tmp_path), "TRANSCARE_MLLP_PORT": "4000"})
    assert s.mllp_port == 4000 and s.require_known_facility is True
    assert s.facility("GENHOSP").allowed_sources == ("10.0.0.5",)
    assert str(s.time_zone("GENHOSP")) == "America/Chicago"
    assert str(s.time_zone("OTHER")) == "America/New_York"


@pytest.mark.parametrize(
    ("toml", "env", "names"),
    [
        ('[listener]\nidle_timeout_s = "abc"\n', {}, "idle_timeout_s"),
        ("[listener]\nrequire_known_facility = 1\n", {}, "require_known_facility"),
        ("[listener]\nno_such_setting = 1\n", {}, "no_such_setting"),
        ('[facilities.X]\ntime_zone = "Mars/Olympus"\n', {}, "Mars/Olympus"),
        ("", {"TRANSCARE_MLLP_PORT": "many"}, "TRANSCARE_MLLP_PORT"),
        ("", {"TRANSCARE_KAFKA_IDEMPOTENCE": "perhaps"}, "TRANSCARE_KAFKA_IDEMPOTENCE"),
        ('[facilities.SNF]\ncare_setting = "snf"\n', {}, r"\[facilities.SNF\] care_setting"),
        ('[transitions]\nfrequent_ed_threshold = "x"\n', {}, "frequent_ed_threshold"),
        ("", {"TRANSCARE_MATCH_THRESHOLD": "high"}, "TRANSCARE_MATCH_THRESHOLD"),
        ("", {"TRANSCARE_WORKER_STAGES": "normaliser,planner"},
         "TRANSCARE_WORKER_STAGES.*unknown worker stage planner"),
        ('[kafka]\nworker_stages = []\n', {}, "worker_stages"),
        ("", {"TRANSCARE_WORKER_NICE": "20"}, "TRANSCARE_WORKER_NICE.*0 to 19"),
        ("", {"TRANSCARE_WORKER_NICE": "-5"}, "TRANSCARE_WORKER_NICE.*0 to 19"),
        ("[kafka]\nworker_nice = true\n", {}, "worker_nice"),
        ("", {"TRANSCARE_STREAM_WORKERS": "0"}, "TRANSCARE_STREAM_WORKERS.*at least 1"),
        # Right type, but no rule can use them (the worker stopped and restarted on these).
        ("", {"TRANSCARE_MATCH_THRESHOLD": "60"}, "TRANSCARE_MATCH_THRESHOLD.*= 60.*threshold <= 100"),
        ("", {"TRANSCARE_MATCH_REVIEW_FLOOR": "-5"}, "TRANSCARE_MATCH_REVIEW_FLOOR.*= -5"),
        ("", {"TRANSCARE_MATCH_THRESHOLD": "101"}, "TRANSCARE_MATCH_THRESHOLD.*= 101"),
        ("[transitions]\nmatch_review_floor = 95\n", {}, "match_review_floor.*= 95"),
        ("", {"TRANSCARE_FREQUENT_ED_THRESHOLD": "0"}, "TRANSCARE_FREQUENT_ED_THRESHOLD.*2 or more"),
        ("", {"TRANSCARE_FREQUENT_ED_THRESHOLD": "-3"}, "TRANSCARE_FREQUENT_ED_THRESHOLD.*2 or more"),
        ("", {"TRANSCARE_STALE_ED_HOURS": "0"}, "TRANSCARE_STALE_ED_HOURS.*above 0"),
        ("", {"TRANSCARE_STALE_INPATIENT_DAYS": "-1"}, "TRANSCARE_STALE_INPATIENT_DAYS.*above 0"),
        ("", {"TRANSCARE_LISTENER_GATHER_MS": "-1"}, "TRANSCARE_LISTENER_GATHER_MS.*= -1.*0"),
        ("[listener]\nlisten_gather = 1\n", {}, "listen_gather"),
        ("[listener]\nlistener_gather_ms = 50\n", {}, "listener_gather_ms.*= 50.*to 20"),
        ("", {"TRANSCARE_LISTENER_GATHER_MS": "soon"}, "TRANSCARE_LISTENER_GATHER_MS"),
    ],
)
def test_bad_values_are_reported_by_name(tmp_path: Path, toml: str, env: dict[str, str],
                                         names: str) -> None:
    (tmp_path / "transcare.toml").write_text(toml)
    with pytest.raises(SettingsError, match=names):
        load_settings({"TRANSCARE_DATA_DIR": str(tmp_path), **env})


def test_transitions_settings_and_post_acute_facilities(tmp_path: Path) -> None:
    from transcare.transitions_agent import transitions_config

    (tmp_path / "transcare.toml").write_text(
        '[facilities.SUNRISE]\ncare_setting = "post_acute"\n[facilities.GEN]\n'
        "[transitions]\nfrequent_ed_threshold = 3\nstale_ed_hours = 24\n")
    s = load_settings({"TRANSCARE_DATA_DIR": str(tmp_path), "TRANSCARE_MATCH_THRESHOLD": "95"})
    config = transitions_config(s)
    assert config.rules.post_acute_facilities == frozenset({"SUNRISE"})
    assert config.rules.frequent_ed_threshold == 3
    assert config.rules.stale_ed.total_seconds() == 24 * 3600
    assert config.policy.threshold == 95.0


@pytest.mark.parametrize(
    ("value", "stages", "group"),
    [
        ("", ("normaliser", "transitions", "followup"), "transcare"),
        ("followup,normaliser,transitions", ("normaliser", "transitions", "followup"),
         "transcare"),
        ("normaliser", ("normaliser",), "transcare-normaliser"),
        (" followup , transitions ", ("transitions", "followup"),
         "transcare-transitions-followup"),
    ],
)
def test_worker_stages_and_their_consumer_group(tmp_path: Path, value: str,
                                                stages: tuple[str, ...], group: str) -> None:
    s = load_settings({"TRANSCARE_DATA_DIR": str(tmp_path), "TRANSCARE_WORKER_STAGES": value})
    assert s.worker_stages == stages
    assert s.worker_group == group


def test_a_worker_builds_only_its_stages(tmp_path: Path) -> None:
    from transcare.worker import create_app

    def parts(value: str) -> tuple[set[str], bool]:
        s = load_settings({"TRANSCARE_DATA_DIR": str(tmp_path), "TRANSCARE_WORKER_STAGES": value})
        app = create_app(s)
        names = {t.__name__ for t in app._app_tasks}
        return {n.removeprefix("consume_") for n in names if n.startswith("consume_")}, \
            "publish_outbox" in names

    assert parts("normaliser") == ({"normaliser"}, False)
    assert parts("transitions,followup") == ({"transitions", "followup"}, True)
    assert parts("followup") == ({"followup"}, True)  # its rows get published too
    assert parts("") == ({"normaliser", "transitions", "followup"}, True)


def test_each_stage_consumes_in_a_consumer_group_of_its_own(tmp_path: Path) -> None:
    s = load_settings({"TRANSCARE_DATA_DIR": str(tmp_path), "TRANSCARE_CONSUMER_GROUP": "tc"})
    assert [s.stage_group(stage) for stage in s.worker_stages] == [
        "tc-normaliser", "tc-transitions", "tc-followup"]


def test_the_message_store_is_a_sqlite_file_of_its_own_beside_the_database(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.effective_message_store_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/transcare-messages.db"
    assert Settings(database_url="sqlite:////srv/tc/main.db").effective_message_store_url == \
        "sqlite:////srv/tc/main-messages.db"


def test_the_message_store_shares_a_postgresql_database_unless_set() -> None:
    pg = "postgresql://tc@db.example/transcare"
    assert Settings(database_url=pg).effective_message_store_url == pg
    assert Settings(database_url=pg, message_store_url="postgresql://tc@db2/messages") \
        .effective_message_store_url == "postgresql://tc@db2/messages"
    assert load_settings({"TRANSCARE_MESSAGE_STORE_URL": "sqlite:////m.db"}).message_store_url == \
        "sqlite:////m.db"


def test_both_databases_are_migrated_once_each(tmp_path: Path) -> None:
    from transcare.db.migrate import database_urls

    assert len(database_urls(Settings(data_dir=tmp_path))) == 2
    pg = "postgresql://tc@db.example/transcare"
    assert database_urls(Settings(database_url=pg)) == [pg]


def test_the_listeners_postgresql_connection_reads_the_url_as_the_engine_does() -> None:
    """asyncpg.connect arguments come from SQLAlchemy's asyncpg dialect: ``?ssl=disable`` is
    the driver's ssl option (a plain DSN handed it to the server as a setting, which failed),
    and the adapter's own options are left out."""
    from adt_listener.pg_store import connect_args

    args = connect_args("postgresql://tc:pw@db.example:6432/transcare"
                        "?ssl=require&prepared_statement_cache_size=0")
    assert args == {"host": "db.example", "port": 6432, "database": "transcare", "user": "tc",
                    "password": "pw", "ssl": "require"}


def test_the_workers_run_at_a_lower_priority_than_the_listener_unless_told(tmp_path: Path) -> None:
    assert load_settings({"TRANSCARE_DATA_DIR": str(tmp_path)}).worker_nice == 10
    assert load_settings({"TRANSCARE_DATA_DIR": str(tmp_path),
                          "TRANSCARE_WORKER_NICE": "0"}).worker_nice == 0


def test_the_deploy_example_loads(tmp_path: Path) -> None:
    """deploy/transcare.example.toml, which deployments start from, is valid as shipped."""
    example = Path(__file__).resolve().parents[2] / "deploy" / "transcare.example.toml"
    s = load_settings({"TRANSCARE_CONFIG": str(example), "TRANSCARE_DATA_DIR": str(tmp_path)})
    assert (s.mllp_port, s.listener_gather_ms, s.require_known_facility) == (2575, 1.0, True)
