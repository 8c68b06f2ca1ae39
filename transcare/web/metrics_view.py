"""Rendering ``/metrics``: process metrics (multiprocess-aware) plus gauges read from the store."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


def metrics_registry() -> CollectorRegistry:
    """Every process's metrics when they share a directory (``transcare up``), else this
    process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render_metrics(backlog: int, by_status: dict[str, int],
                   stats: dict[str, Any] | None = None) -> tuple[str, str]:
    """The exposition text and its content type; ``stats`` from
    :func:`transitions.episode_queries.stream_stats`."""
    lines = [
        "# HELP transcare_relay_backlog Stored accepted messages not yet published to Kafka "
        "(or published in the last half second and not yet normalised)",
        "# TYPE transcare_relay_backlog gauge",
        f"transcare_relay_backlog {backlog}",
        "# HELP transcare_messages_stored Messages in the store by status",
        "# TYPE transcare_messages_stored gauge",
    ]
    lines += [f'transcare_messages_stored{{status="{s}"}} {n}' for s, n in sorted(by_status.items())]
    if stats is not None:
        lines += ["# HELP transcare_oldest_in_flight_seconds Age of the oldest stored message "
                  "not yet normalised by the workers (0 when none waits)",
                  "# TYPE transcare_oldest_in_flight_seconds gauge",
                  f"transcare_oldest_in_flight_seconds {stats.get('oldest_in_flight_s', 0.0):.3f}"]
        lags = {k: v for k, v in (stats.get("consumer_lag") or {}).items() if v is not None}
        if lags:
            lines += ["# HELP transcare_consumer_lag_records Records of each stage's input topic "
                      "its consumer group has not handled yet (read by the web process)",
                      "# TYPE transcare_consumer_lag_records gauge"]
            lines += [f'transcare_consumer_lag_records{{stage="{k}"}} {v}'
                      for k, v in sorted(lags.items())]
        lines += _episode_lines(stats)
        if "tasks" in stats:
            lines += _followup_lines(stats)
    body = generate_latest(metrics_registry()).decode("utf-8") + "\n".join(lines) + "\n"
    return body, CONTENT_TYPE_LATEST


def _followup_lines(stats: dict[str, Any]) -> list[str]:
    lines = ["# HELP transcare_tasks Follow-up tasks: open, claimed, overdue, escalated",
             "# TYPE transcare_tasks gauge"]
    lines += [f'transcare_tasks{{state="{k}"}} {v}' for k, v in sorted(stats["tasks"].items())]
    lines += ["# HELP transcare_notifications Notifications by channel and delivery status",
              "# TYPE transcare_notifications gauge"]
    lines += [f'transcare_notifications{{channel="{c}",status="{s}"}} {n}'
              for (c, s), n in sorted(stats["notifications"].items())]
    return lines


def _episode_lines(stats: dict[str, Any]) -> list[str]:
    lines = ["# HELP transcare_episodes_open Open episodes by kind",
             "# TYPE transcare_episodes_open gauge"]
    opened = stats["open_episodes"]
    lines += [f'transcare_episodes_open{{kind="{k}"}} {opened.get(k, 0)}'
              for k in ("ed", "inpatient", "observation", "post_acute")]
    for name, key, text in (
        ("transcare_match_reviews_pending", "reviews_pending", "ADT events waiting for match review"),
        ("transcare_outbox_backlog", "outbox_backlog", "Outbox rows not yet published to Kafka"),
        ("transcare_roster_members", "enrolled", "Members on the enrollment roster"),
    ):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {stats[key]}"]
    return lines
