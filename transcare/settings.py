"""Settings: read once from ``TRANSCARE_*`` environment variables and an optional TOML file.

Every setting has a default (see docs/configuration.md). The result is a frozen object passed
to each composition root; nothing else reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url


class SettingsError(ValueError):
    """A setting is invalid; the message names the variable or TOML key."""


@dataclass(frozen=True)
class FacilitySettings:
    """Per sending facility (MSH-4) settings from the TOML ``[facilities.NAME]`` tables."""

    name: str
    time_zone: str = "America/New_York"
    allowed_sources: tuple[str, ...] = ()
    # "acute" (hospital or ED) or "post_acute" (SNF, inpatient rehab, LTCH): a stay at a
    # post-acute facility is a post_acute episode.
    care_setting: str = "acute"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    database_url: str = ""
    # Where the listener stores received messages; "" means beside the database (see
    # effective_message_store_url).
    message_store_url: str = ""
    kafka_bootstrap: str = ""
    # Set by `transcare up` for its children: the bootstrap names the embedded broker.
    broker_embedded: bool = False
    broker_port: int = 9092
    mllp_host: str = "0.0.0.0"
    mllp_port: int = 2575
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    max_message_bytes: int = 1 << 20
    idle_timeout_s: float = 300.0
    max_connections: int = 500
    # How long a store batch may wait for busy connections' next messages (docs/configuration.md).
    listener_gather_ms: float = 1.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    default_time_zone: str = "America/New_York"
    sqlite_synchronous: str = "NORMAL"
    topic_partitions: int = 8
    consumer_group: str = "transcare"
    # The stages one worker process runs (docs/configuration.md): all three by default.
    worker_stages: tuple[str, ...] = ("normaliser", "transitions", "followup")
    # Transitions and follow-up worker processes `transcare up` runs (PostgreSQL; on SQLite
    # always one: a second would only queue for the database's write lock).
    stream_workers: int = 1
    # How much lower the stream workers' CPU priority is than the listener's (nice, 0..19):
    # on a shared machine the ACKs come first and processing catches up (docs/performance.md).
    worker_nice: int = 10
    kafka_idempotence: bool = False
    # Seconds after which a published but unprocessed message is published again; -1 means
    # 60 on the embedded (memory-only) broker and never on an external cluster.
    republish_after_s: float = -1.0
    # Consumer-group timing; -1 means short (fast rebalances) on the embedded broker, Kafka's
    # usual values on a cluster. The embedded broker completes a join only after the
    # rebalance timeout, and a dead member leaves the group after the session timeout.
    kafka_rebalance_timeout_s: float = -1.0
    kafka_session_timeout_s: float = -1.0
    require_known_facility: bool = False
    log_level: str = "INFO"
    metrics_dir: str = ""
    config_file: str = ""
    # Transitions (DOMAIN.md sections 1 and 6).
    frequent_ed_threshold: int = 4  # the Nth ED visit within 12 months flags frequent_ed
    stale_ed_hours: float = 48.0
    stale_inpatient_days: float = 30.0
    match_threshold: float = 90.0  # demographic score that matches (docs/matching.md)
    match_review_floor: float = 75.0  # scores from here to the threshold go to review
    # Follow-up (DOMAIN.md sections 3-5).
    rules_file: str = ""  # a TOML rule table replacing the default (followup/default_rules.toml)
    program_time_zone: str = "America/New_York"  # business days are counted here
    program_closures: tuple[str, ...] = ()  # extra non-business days, YYYY-MM-DD
    delegation_enabled: bool = False  # delegable tasks may go to allied or support staff
    public_url: str = "http://127.0.0.1:8080"  # base of links in notifications
    smtp_host: str = ""  # unset: e-mail notifications are not sent (recorded as failed)
    smtp_port: int = 25
    smtp_from: str = "transcare@localhost"
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    webhook_secret: str = ""  # HMAC-SHA256 key for webhook signatures
    scheduler_interval_s: float = 5.0  # how often the follow-up scheduler looks for due steps
    facilities: Mapping[str, FacilitySettings] = field(default_factory=dict)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'transcare.db'}"

    @property
    def effective_message_store_url(self) -> str:
        """The message store's database: ``message_store_url`` if set; on SQLite a file of its
        own beside the database (``transcare.db`` -> ``transcare-messages.db``), so the
        listener's commits never queue behind the workers' transactions for SQLite's one
        write lock; on PostgreSQL the same database (row locks, no such queue)."""
        if self.message_store_url:
            return self.message_store_url
        url = make_url(self.effective_database_url)
        path = url.database
        if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
            return self.effective_database_url
        file = Path(path)
        messages = file.with_name(f"{file.stem}-messages{file.suffix or '.db'}")
        return url.set(database=str(messages)).render_as_string(hide_password=False)

    @property
    def embedded_broker(self) -> bool:
        return self.broker_embedded or not self.kafka_bootstrap

    @property
    def effective_republish_after(self) -> float:
        if self.republish_after_s >= 0:
            return self.republish_after_s
        return 60.0 if self.embedded_broker else 0.0

    @property
    def worker_group(self) -> str:
        """The faust app id of a worker running :attr:`worker_stages`: the configured group
        for all stages, ``transcare-normaliser`` for a subset. (Each stage consumes in a
        group of its own, :meth:`stage_group`.)"""
        if set(self.worker_stages) == set(WORKER_STAGES):
            return self.consumer_group
        return "-".join((self.consumer_group, *self.worker_stages))

    def stage_group(self, stage: str) -> str:
        """The consumer group of a stage's input (``transcare-transitions``): every worker
        running the stage shares its partitions, whichever other stages it runs."""
        return f"{self.consumer_group}-{stage}"

    @property
    def rebalance_timeout(self) -> float:
        if self.kafka_rebalance_timeout_s > 0:
            return self.kafka_rebalance_timeout_s
        return 3.0 if self.embedded_broker else 60.0

    @property
    def session_timeout(self) -> float:
        if self.kafka_session_timeout_s > 0:
            return self.kafka_session_timeout_s
        return 6.0 if self.embedded_broker else 45.0

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    def facility(self, name: str) -> FacilitySettings:
        return self.facilities.get(name) or FacilitySettings(name, self.default_time_zone)

    def time_zone(self, facility: str) -> ZoneInfo:
        return ZoneInfo(self.facility(facility).time_zone)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


WORKER_STAGES = ("normaliser", "transitions", "followup")


class _WholeNumber:
    """A whole number from ``low`` to ``high`` (no upper bound when None)."""

    def __init__(self, low: int, high: int | None = None) -> None:
        self.low, self.high = low, high

    def __call__(self, value: str | int) -> int:
        number = int(value)
        if number < self.low or (self.high is not None and number > self.high):
            bounds = f"of at least {self.low}" if self.high is None else \
                f"from {self.low} to {self.high}"
            raise ValueError(f"expected a whole number {bounds}")
        return number


_at_least_one = _WholeNumber(1)  # a count of processes
_niceness = _WholeNumber(0, 19)  # a nice increment: 0 (the listener's priority) to 19


def _stages(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated (or a TOML list of) worker stages, in pipeline order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    wanted = {str(v).strip() for v in items if str(v).strip()}
    unknown = sorted(wanted - set(WORKER_STAGES))
    if unknown or not wanted:
        raise ValueError(f"unknown worker stage {', '.join(unknown) or '(none)'}: expected "
                         f"one or more of {', '.join(WORKER_STAGES)}")
    return tuple(stage for stage in WORKER_STAGES if stage in wanted)


def _dates(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated (or a TOML list of) YYYY-MM-DD dates."""
    items = value.split(",") if isinstance(value, str) else list(value)
    days = tuple(str(v).strip() for v in items if str(v).strip())
    for day in days:
        date.fromisoformat(day)  # ValueError names the bad date
    return days


_ENV: dict[str, tuple[str, Any]] = {
    "TRANSCARE_DATA_DIR": ("data_dir", Path),
    "TRANSCARE_DATABASE_URL": ("database_url", str),
    "TRANSCARE_MESSAGE_STORE_URL": ("message_store_url", str),
    "TRANSCARE_KAFKA_BOOTSTRAP": ("kafka_bootstrap", str),
    "TRANSCARE_BROKER_PORT": ("broker_port", int),
    "TRANSCARE_BROKER_EMBEDDED": ("broker_embedded", _bool),
    "TRANSCARE_MLLP_HOST": ("mllp_host", str),
    "TRANSCARE_MLLP_PORT": ("mllp_port", int),
    "TRANSCARE_HTTP_HOST": ("http_host", str),
    "TRANSCARE_HTTP_PORT": ("http_port", int),
    "TRANSCARE_MAX_MESSAGE_BYTES": ("max_message_bytes", int),
    "TRANSCARE_IDLE_TIMEOUT": ("idle_timeout_s", float),
    "TRANSCARE_MAX_CONNECTIONS": ("max_connections", int),
    "TRANSCARE_LISTENER_GATHER_MS": ("listener_gather_ms", float),
    "TRANSCARE_TLS_CERT": ("tls_cert", str),
    "TRANSCARE_TLS_KEY": ("tls_key", str),
    "TRANSCARE_TLS_CLIENT_CA": ("tls_client_ca", str),
    "TRANSCARE_TIME_ZONE": ("default_time_zone", str),
    "TRANSCARE_SQLITE_SYNCHRONOUS": ("sqlite_synchronous", str),
    "TRANSCARE_TOPIC_PARTITIONS": ("topic_partitions", int),
    "TRANSCARE_CONSUMER_GROUP": ("consumer_group", str),
    "TRANSCARE_WORKER_STAGES": ("worker_stages", _stages),
    "TRANSCARE_STREAM_WORKERS": ("stream_workers", _at_least_one),
    "TRANSCARE_WORKER_NICE": ("worker_nice", _niceness),
    "TRANSCARE_KAFKA_IDEMPOTENCE": ("kafka_idempotence", _bool),
    "TRANSCARE_REPUBLISH_AFTER": ("republish_after_s", float),
    "TRANSCARE_KAFKA_REBALANCE_TIMEOUT": ("kafka_rebalance_timeout_s", float),
    "TRANSCARE_KAFKA_SESSION_TIMEOUT": ("kafka_session_timeout_s", float),
    "TRANSCARE_REQUIRE_KNOWN_FACILITY": ("require_known_facility", _bool),
    "TRANSCARE_LOG_LEVEL": ("log_level", str),
    "TRANSCARE_METRICS_DIR": ("metrics_dir", str),
    "TRANSCARE_CONFIG": ("config_file", str),
    "TRANSCARE_FREQUENT_ED_THRESHOLD": ("frequent_ed_threshold", int),
    "TRANSCARE_STALE_ED_HOURS": ("stale_ed_hours", float),
    "TRANSCARE_STALE_INPATIENT_DAYS": ("stale_inpatient_days", float),
    "TRANSCARE_MATCH_THRESHOLD": ("match_threshold", float),
    "TRANSCARE_MATCH_REVIEW_FLOOR": ("match_review_floor", float),
    "TRANSCARE_RULES_FILE": ("rules_file", str),
    "TRANSCARE_PROGRAM_TIME_ZONE": ("program_time_zone", str),
    "TRANSCARE_PROGRAM_CLOSURES": ("program_closures", _dates),
    "TRANSCARE_DELEGATION": ("delegation_enabled", _bool),
    "TRANSCARE_PUBLIC_URL": ("public_url", str),
    "TRANSCARE_SMTP_HOST": ("smtp_host", str),
    "TRANSCARE_SMTP_PORT": ("smtp_port", int),
    "TRANSCARE_SMTP_FROM": ("smtp_from", str),
    "TRANSCARE_SMTP_STARTTLS": ("smtp_starttls", _bool),
    "TRANSCARE_SMTP_USERNAME": ("smtp_username", str),
    "TRANSCARE_SMTP_PASSWORD": ("smtp_password", str),
    "TRANSCARE_WEBHOOK_SECRET": ("webhook_secret", str),
    "TRANSCARE_SCHEDULER_INTERVAL": ("scheduler_interval_s", float),
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment (default: ``os.environ``) and the TOML file.

    The TOML file (``TRANSCARE_CONFIG``, else ``<data dir>/transcare.toml`` when present) may
    hold ``[listener]``-style keys with the same names as the fields and ``[facilities.NAME]``
    tables; environment variables win over the file.

    Raises:
        SettingsError: a value has the wrong type, or a time zone is unknown.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for var, (name, kind) in _ENV.items():
        if env.get(var, "") != "":
            try:
                values[name] = kind(env[var])
            except ValueError as exc:
                raise SettingsError(f"{var}={env[var]!r}: {exc}") from exc
    settings = Settings(**values)
    path = Path(settings.config_file) if settings.config_file else settings.data_dir / "transcare.toml"
    if settings.config_file or path.is_file():
        settings = _apply_toml(settings, path, set(values))
    _check_zones(settings)
    _check_ranges(settings)
    return settings


def _apply_toml(settings: Settings, path: Path, from_env: set[str]) -> Settings:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {path}: {exc}") from exc
    known = {name: kind for name, kind in _ENV.values()}
    changes: dict[str, Any] = {}
    for section in ("service", "listener", "database", "kafka", "web", "transitions", "followup",
                    "notifications"):
        for key, value in doc.get(section, {}).items():
            if key not in known:
                raise SettingsError(f"config file {path}: [{section}] {key} is not a setting")
            if key not in from_env:
                try:
                    changes[key] = _convert(known[key], value)
                except (TypeError, ValueError) as exc:
                    raise SettingsError(f"config file {path}: [{section}] {key} = {value!r}: "
                                        f"{exc}") from exc
    facilities = {
        name: FacilitySettings(
            name=name,
            time_zone=str(table.get("time_zone", settings.default_time_zone)),
            allowed_sources=tuple(table.get("allowed_sources", ())),
            care_setting=_care_setting(name, table.get("care_setting", "acute")),
        )
        for name, table in doc.get("facilities", {}).items()
    }
    return replace(settings, facilities=facilities, **changes)


def _care_setting(facility: str, value: object) -> str:
    if value not in ("acute", "post_acute"):
        raise SettingsError(f"[facilities.{facility}] care_setting = {value!r}: expected "
                            "\"acute\" or \"post_acute\"")
    return str(value)


def _convert(kind: Any, value: Any) -> Any:
    """A TOML value as the setting's type; TOML booleans and numbers are taken as they are."""
    if kind is _bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _bool(value)
        raise ValueError("expected true or false")
    if (kind in (int, float) or isinstance(kind, _WholeNumber)) and isinstance(value, bool):
        raise ValueError("expected a number")
    return kind(value)


def _check_ranges(settings: Settings) -> None:
    """Values of the right type that no rule can use: refused here, naming the setting, rather
    than by the worker when it builds its rules (it would stop, restart and stop again)."""
    floor, threshold = settings.match_review_floor, settings.match_threshold
    if not 0 <= floor <= threshold <= 100:
        raise SettingsError(
            f"TRANSCARE_MATCH_REVIEW_FLOOR (match_review_floor) = {floor:g} and "
            f"TRANSCARE_MATCH_THRESHOLD (match_threshold) = {threshold:g}: expected "
            "0 <= review floor <= threshold <= 100 (docs/matching.md)")
    if settings.frequent_ed_threshold < 2:
        raise SettingsError(
            f"TRANSCARE_FREQUENT_ED_THRESHOLD (frequent_ed_threshold) = "
            f"{settings.frequent_ed_threshold}: expected 2 or more (the Nth ED visit within "
            "12 months raises frequent_ed; 1 would flag every visit)")
    if not 0 <= settings.listener_gather_ms <= 20:
        raise SettingsError(
            f"TRANSCARE_LISTENER_GATHER_MS (listener_gather_ms) = {settings.listener_gather_ms:g}: "
            "expected milliseconds from 0 (no gathering) to 20")
    for var, name, value in (("TRANSCARE_STALE_ED_HOURS", "stale_ed_hours", settings.stale_ed_hours),
                             ("TRANSCARE_STALE_INPATIENT_DAYS", "stale_inpatient_days",
                              settings.stale_inpatient_days)):
        if not value > 0:
            raise SettingsError(f"{var} ({name}) = {value:g}: expected a number above 0")


def _check_zones(settings: Settings) -> None:
    zones = [("TRANSCARE_TIME_ZONE", settings.default_time_zone),
             ("TRANSCARE_PROGRAM_TIME_ZONE", settings.program_time_zone)] + [
        (f"[facilities.{f.name}] time_zone", f.time_zone) for f in settings.facilities.values()
    ]
    for where, zone in zones:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(f"{where}: unknown time zone {zone!r}") from exc
