"""Webhook signatures: HMAC-SHA256 over the timestamp and the body. Pure: no I/O.

The ``X-Transcare-Signature`` header is ``t=<unix seconds>,v1=<hex digest>`` where the digest
is ``HMAC-SHA256(secret, f"{t}.".encode() + body)``. Signing the timestamp with the body lets
a receiver reject replays of an old request (``tolerance_s``); the ``Idempotency-Key`` header
(the notification id) lets it drop a retry it already handled.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Transcare-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def digest(secret: str, body: bytes, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}."`` followed by ``body``, keyed by ``secret``."""
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Transcare-Signature`` value: ``t=<timestamp>,v1=<hex digest>``.

    Raises:
        ValueError: an empty secret (a signature nobody can check is no signature).
    """
    if not secret:
        raise ValueError("webhook secret is empty")
    return f"t={timestamp},v1={digest(secret, body, timestamp)}"


def verify(secret: str, body: bytes, header: str, now: float, tolerance_s: float = 300) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of
    ``now`` (unix seconds). Several ``v1`` values are allowed (secret rotation); each is
    compared in constant time. A malformed header is simply not valid (no exception)."""
    timestamp, candidates = _parse(header)
    if timestamp is None or not candidates or not secret:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = digest(secret, body, timestamp)
    return any(hmac.compare_digest(expected, c) for c in candidates)


def headers(secret: str, body: bytes, timestamp: int, notification_id: str) -> dict[str, str]:
    """Every header a webhook request carries."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "transcare",
        IDEMPOTENCY_HEADER: notification_id,
        SIGNATURE_HEADER: sign(secret, body, timestamp),
    }


def _parse(header: str) -> tuple[int | None, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    return timestamp, candidates
