"""The ops page's live figures: messages a second by facility, ACK codes, dead letters, ACK
latency and processing latency over the last minute.

They come from the processes' Prometheus metrics (every process's under ``transcare up``,
which shares one metrics directory), read by the web process every few seconds: a
:class:`Sample` is the counters and histogram buckets at one moment, and :func:`window` turns the
oldest and newest samples of the last minute into rates and quantiles. :func:`window` and
:func:`quantile` are pure; :func:`read_sample` reads a registry; :class:`LiveSampler` keeps the
samples.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 60.0  # the span the live figures cover
SAMPLE_EVERY_S = 5.0

Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending, +Inf last


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() when read
    received: Mapping[str, float] = field(default_factory=dict)  # facility -> messages
    acks: Mapping[str, float] = field(default_factory=dict)  # ACK code -> ACKs sent
    deadletters: float = 0.0
    ack_latency: Buckets = ()  # seconds: a complete frame to its ACK written
    episode_latency: Buckets = ()  # seconds: receipt of the message to its episode commit


@dataclass(frozen=True)
class Live:
    seconds: float  # the span the figures cover (up to WINDOW_S)
    rates: dict[str, float]  # facility -> messages a second
    acks: dict[str, int]  # ACK code -> ACKs sent in the span
    deadletters: int
    ack_p50: float | None  # seconds; None when nothing was measured in the span
    ack_p99: float | None
    episode_p50: float | None
    episode_p99: float | None

    @property
    def rate(self) -> float:
        return sum(self.rates.values())


def _delta(new: Mapping[str, float], old: Mapping[str, float]) -> dict[str, float]:
    # a counter lower than before belongs to a restarted process: count from zero
    return {k: v - old.get(k, 0.0) if v >= old.get(k, 0.0) else v for k, v in new.items()}


def _bucket_delta(new: Buckets, old: Buckets) -> Buckets:
    before = dict(old)
    if any(count < before.get(bound, 0.0) for bound, count in new):
        return new  # a restarted process: its counts since then
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in new)


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of a histogram's cumulative buckets, interpolated linearly within
    the bucket it falls in (as Prometheus' ``histogram_quantile``); the highest finite bound
    when it falls in the +Inf bucket; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def window(samples: Sequence[Sample], span: float = WINDOW_S) -> Live | None:
    """The figures between the oldest sample within ``span`` of the newest and the newest; None
    until two samples at least a second apart exist."""
    if not samples:
        return None
    newest = samples[-1]
    oldest = next((s for s in samples if newest.at - s.at <= span), newest)
    seconds = newest.at - oldest.at
    if seconds < 1.0:
        return None
    received = _delta(newest.received, oldest.received)
    acks = _delta(newest.acks, oldest.acks)
    ack = _bucket_delta(newest.ack_latency, oldest.ack_latency)
    episode = _bucket_delta(newest.episode_latency, oldest.episode_latency)
    dead = newest.deadletters - oldest.deadletters
    return Live(
        seconds=seconds,
        rates={f: n / seconds for f, n in sorted(received.items()) if n > 0},
        acks={code: round(n) for code, n in sorted(acks.items()) if n > 0},
        deadletters=round(dead if dead >= 0 else newest.deadletters),
        ack_p50=quantile(0.5, ack), ack_p99=quantile(0.99, ack),
        episode_p50=quantile(0.5, episode), episode_p99=quantile(0.99, episode))


def read_sample(families: Iterable[Any], at: float) -> Sample:
    """A :class:`Sample` from a registry's ``collect()`` (prometheus_client metric families)."""
    received: dict[str, float] = {}
    acks: dict[str, float] = {}
    dead = 0.0
    ack_buckets: dict[float, float] = {}
    episode_buckets: dict[float, float] = {}
    for family in families:
        for s in family.samples:
            if s.name == "transcare_messages_received_total":
                facility = s.labels.get("facility", "")
                received[facility] = received.get(facility, 0.0) + s.value
            elif s.name == "transcare_acks_total":
                code = s.labels.get("code", "")
                acks[code] = acks.get(code, 0.0) + s.value
            elif s.name == "transcare_deadletters_total":
                dead += s.value
            elif s.name == "transcare_ack_latency_seconds_bucket":
                bound = float(s.labels["le"])
                ack_buckets[bound] = ack_buckets.get(bound, 0.0) + s.value
            elif s.name == "transcare_transitions_latency_seconds_bucket":
                bound = float(s.labels["le"])
                episode_buckets[bound] = episode_buckets.get(bound, 0.0) + s.value
    return Sample(at, received, acks, dead, tuple(sorted(ack_buckets.items())),
                  tuple(sorted(episode_buckets.items())))


class LiveSampler:
    """The samples of the last minute (and one before it), one each time :meth:`sample` is
    called; the web app calls it every :data:`SAMPLE_EVERY_S` seconds."""

    def __init__(self, read: Callable[[float], Sample],
                 clock: Callable[[], float] = time.monotonic, span: float = WINDOW_S) -> None:
        self._read, self._clock, self._span = read, clock, span
        self._samples: deque[Sample] = deque()

    def sample(self) -> None:
        self._samples.append(self._read(self._clock()))
        newest = self._samples[-1].at
        while len(self._samples) > 2 and newest - self._samples[1].at >= self._span:
            self._samples.popleft()

    def live(self) -> Live | None:
        return window(list(self._samples), self._span)
