"""When to try a failed delivery again. Pure: no I/O.

A notification is tried at most :data:`MAX_ATTEMPTS` times. After failure ``n`` (1-based) the
next try waits ``SCHEDULE[n - 1]`` plus a jitter of 0 to 20 % of it; the jitter is derived
from the attempt number and the notification id, so it is deterministic (testable, and the
same on every worker) yet spreads notifications that failed together. After the last failure
there is no next try: the notification is dead.

Permanent errors skip the schedule and go straight to dead: an SMTP 5xx refusal of the
recipient or of the message, a webhook answer 4xx other than 408 and 429, a recipient with no
e-mail address or webhook URL (reason "no e-mail address for recipient"), or one missing from
the staff directory. A channel that is not configured (no SMTP host, no webhook secret) is a
transient failure: it is retried on the schedule, so fixing the settings within the window
still delivers.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=10), timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10),
    timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2),
)
MAX_ATTEMPTS = len(SCHEDULE) + 1  # 8: the 8th failure is final
JITTER = 0.2  # at most this fraction of the delay is added


def next_attempt(attempts: int, now: datetime, key: str = "") -> datetime | None:
    """When to try again after ``attempts`` failed tries (1-based), or None when that was the
    last (the notification is dead).

    Raises:
        ValueError: ``attempts`` below 1.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if attempts >= MAX_ATTEMPTS:
        return None
    base = SCHEDULE[attempts - 1]
    return now + base + base * (JITTER * _fraction(f"{key}:{attempts}"))


def _fraction(seed: str) -> float:
    """A number in [0, 1) fixed by ``seed``."""
    head = hashlib.sha256(seed.encode()).digest()[:8]
    return int.from_bytes(head, "big") / 2.0**64
