"""The normaliser's outcome takes the record's Kafka timestamp (the relay's send) as the
message's published_at, never earlier than the message was received."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adt_listener.normaliser import Normalised, with_record_time
from adt_listener.store import Outcome

RECEIVED = datetime(2026, 12, 4, 10, 0, 0, 123000, tzinfo=UTC)
MS = int(RECEIVED.timestamp() * 1000)


OUTCOME = Outcome(7, "processed", "a reason", RECEIVED)
DOC: Any = {"the": "event"}
DEADLETTER: Any = object()  # both set only to tell the fields apart


def result(outcome: Outcome | None = OUTCOME) -> Normalised:
    return Normalised(b"key", DOC, DEADLETTER, outcome, RECEIVED)


@pytest.mark.parametrize(("timestamp_ms", "expected"), [
    (MS + 250, RECEIVED + timedelta(milliseconds=250)),
    (MS, RECEIVED),
    (MS - 5000, RECEIVED),  # the broker's clock behind the listener's
])
def test_published_at_is_the_records_time_not_before_receipt(
        timestamp_ms: int, expected: datetime) -> None:
    got = with_record_time(result(), timestamp_ms)
    assert got.outcome == Outcome(7, "processed", "a reason", RECEIVED, expected)
    assert (got.key, got.doc, got.deadletter, got.received_at) == \
        (b"key", DOC, DEADLETTER, RECEIVED)


@pytest.mark.parametrize("timestamp_ms", [None, -1])
def test_without_a_record_time_the_outcome_is_left_to_its_own(timestamp_ms: int | None) -> None:
    assert with_record_time(result(), timestamp_ms) == result()


def test_a_record_naming_no_message_is_left_as_it_is() -> None:
    assert with_record_time(result(None), MS) == result(None)
