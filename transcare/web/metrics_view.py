"""Rendering ``/metrics``: process metrics (multiprocess-aware) plus gauges read from the store."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render_metrics(backlog: int, by_status: dict[str, int]) -> tuple[str, str]:
    """The exposition text and its content type."""
    lines = [
        "# HELP transcare_relay_backlog Stored accepted messages not yet published to Kafka",
        "# TYPE transcare_relay_backlog gauge",
        f"transcare_relay_backlog {backlog}",
        "# HELP transcare_messages_stored Messages in the store by status",
        "# TYPE transcare_messages_stored gauge",
    ]
    lines += [f'transcare_messages_stored{{status="{s}"}} {n}' for s, n in sorted(by_status.items())]
    body = generate_latest(_registry()).decode("utf-8") + "\n".join(lines) + "\n"
    return body, CONTENT_TYPE_LATEST
