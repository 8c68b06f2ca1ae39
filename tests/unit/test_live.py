"""The ops page's live figures (transcare/web/live.py): rates and quantiles over the last minute
from samples of the processes' counters and histogram buckets."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from transcare.web.live import LiveSampler, Sample, quantile, read_sample, window

INF = math.inf
# 10 observations: 5 up to 1 ms, 4 more up to 2 ms, 1 more up to 5 ms
BUCKETS = ((0.001, 5.0), (0.002, 9.0), (0.005, 10.0), (INF, 10.0))


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    (0.5, BUCKETS, 0.001),  # rank 5: the top of the first bucket
    (0.25, BUCKETS, 0.0005),  # rank 2.5: half way up the first bucket (from 0)
    (0.7, BUCKETS, 0.0015),  # rank 7: half way through the second bucket's 4
    (0.99, BUCKETS, 0.0047),  # rank 9.9: 0.9 of the way up the third
    (0.99, ((0.001, 1.0), (INF, 10.0)), 0.001),  # in the +Inf bucket: the highest bound
    (0.5, ((0.001, 0.0), (INF, 0.0)), None),  # nothing observed
    (0.5, (), None),
], ids=["median", "quarter", "second-bucket", "p99", "overflow", "empty", "no-buckets"])
def test_quantile_interpolates_within_its_bucket(q: float, buckets: tuple[tuple[float, float], ...],
                                                 expected: float | None) -> None:
    got = quantile(q, buckets)
    assert got == pytest.approx(expected) if expected is not None else got is None


def s(at: float, received: dict[str, float] | None = None, acks: dict[str, float] | None = None,
      dead: float = 0.0, ack: tuple[tuple[float, float], ...] = (),
      episode: tuple[tuple[float, float], ...] = ()) -> Sample:
    return Sample(at, received or {}, acks or {}, dead, ack, episode)


def test_rates_codes_and_latencies_are_the_windows_differences() -> None:
    old = s(100.0, {"GENHOSP": 1000, "STMARYS": 50}, {"AA": 1040, "AR": 10}, 2,
            ((0.001, 100.0), (0.002, 100.0), (INF, 100.0)), ((0.5, 20.0), (1.0, 20.0), (INF, 20.0)))
    new = s(160.0, {"GENHOSP": 1600, "STMARYS": 50, "NEW": 30}, {"AA": 1670, "AR": 10}, 3,
            ((0.001, 400.0), (0.002, 700.0), (INF, 700.0)), ((0.5, 620.0), (1.0, 620.0), (INF, 620.0)))
    live = window([old, new])
    assert live is not None and live.seconds == 60.0
    assert live.rates == {"GENHOSP": 10.0, "NEW": 0.5}  # a facility that sent nothing is left out
    assert live.rate == 10.5
    assert (live.acks, live.deadletters) == ({"AA": 630}, 1)
    assert live.ack_p50 == pytest.approx(0.001)  # 300 of 600 new ACKs by 1 ms
    assert live.episode_p99 == pytest.approx(0.495)


def test_only_the_last_minute_counts_and_one_sample_is_no_window() -> None:
    samples = [s(0.0, {"A": 0}), s(30.0, {"A": 300}), s(90.0, {"A": 1500})]
    live = window(samples)
    assert live is not None and (live.seconds, live.rates) == (60.0, {"A": 20.0})
    assert window(samples[:1]) is None and window([]) is None
    assert window([s(0.0), s(0.5)]) is None  # less than a second apart


def test_a_restarted_process_counts_from_zero() -> None:
    """Counters and buckets lower than before belong to a process that restarted in the
    window: what it counted since is the difference."""
    old = s(0.0, {"A": 500}, {"AA": 500}, 4, ((0.001, 500.0), (INF, 500.0)))
    new = s(10.0, {"A": 20}, {"AA": 20}, 1, ((0.001, 20.0), (INF, 20.0)))
    live = window([old, new])
    assert live is not None
    assert (live.rates, live.acks, live.deadletters) == ({"A": 2.0}, {"AA": 20}, 1)
    assert live.ack_p50 == pytest.approx(0.0005)


def test_a_sample_is_read_from_the_processes_metrics() -> None:
    registry = CollectorRegistry()
    received = Counter("transcare_messages_received", "", ["facility", "type"], registry=registry)
    acks = Counter("transcare_acks", "", ["code"], registry=registry)
    dead = Counter("transcare_deadletters", "", ["location"], registry=registry)
    ack = Histogram("transcare_ack_latency_seconds", "", buckets=(0.001, 0.01), registry=registry)
    episode = Histogram("transcare_transitions_latency_seconds", "", buckets=(0.5,),
                        registry=registry)
    received.labels("GENHOSP", "ADT^A01").inc(3)
    received.labels("GENHOSP", "ADT^A03").inc(2)
    acks.labels("AA").inc(5)
    dead.labels("PID-7").inc()
    ack.observe(0.0004)
    ack.observe(0.004)
    episode.observe(0.2)
    sample = read_sample(registry.collect(), 7.0)
    assert (sample.at, sample.received, sample.acks, sample.deadletters) == (
        7.0, {"GENHOSP": 5.0}, {"AA": 5.0}, 1.0)
    assert sample.ack_latency == ((0.001, 1.0), (0.01, 2.0), (INF, 2.0))
    assert sample.episode_latency == ((0.5, 1.0), (INF, 1.0))


def test_the_sampler_keeps_the_last_minute_and_one_sample_before_it() -> None:
    now = [0.0]
    seen = []

    def read(at: float) -> Sample:
        seen.append(at)
        return s(at, {"A": at * 10})

    sampler = LiveSampler(read, clock=lambda: now[0])
    assert sampler.live() is None
    for t in range(0, 200, 5):
        now[0] = float(t)
        sampler.sample()
    live = sampler.live()
    assert live is not None and live.seconds == 60.0 and live.rates == {"A": 10.0}
    assert len(sampler._samples) <= 14  # a minute of samples every 5 s, not the whole run
