"""The normaliser's handler: a raw record in, exactly one event or dead letter out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from adt_listener.normaliser import location, normalise
from adt_listener.store import DEADLETTERED, PROCESSED

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
GOOD = ("MSH|^~\\&|REG|GENHOSP|TC|TC|20261123101500||ADT^A03^ADT_A03|C1|P|2.5.1\r"
        "EVN|A03|20261123101500\r"
        "PID|1||123^^^GENHOSP^MR~M998877^^^MEDICAID||DOE^JANE||19700101|F\r"
        "PV1|1|I|W1^101^A^GENHOSP||||||||||||||||V77|||||||||||||||||01||||||||20261120080000|"
        "20261123100000\r")


def record(text: str, message_id: int = 7) -> bytes:
    return json.dumps({
        "schema_version": 1, "message_id": message_id, "sending_facility": "GENHOSP",
        "control_id": "C1", "message_type": "ADT^A03", "received_at": NOW.isoformat(),
        "charset": "ascii", "text": text,
    }).encode()


def run(value: bytes) -> object:
    return normalise(b"123@GENHOSP", value, lambda _: NY, lambda: NOW)


def test_a_discharge_becomes_an_event_with_clinical_times_in_the_facility_zone() -> None:
    result = run(record(GOOD))
    assert result.deadletter is None and result.event is not None  # type: ignore[attr-defined]
    event = result.event  # type: ignore[attr-defined]
    assert event.event_id == "GENHOSP|C1" and event.patient_key == "123@GENHOSP"
    assert event.visit.discharged_at.isoformat() == "2026-11-23T10:00:00-05:00"
    assert event.visit.discharge_disposition == "01"
    assert [i.value for i in event.patient.identifiers] == ["123", "M998877"]
    assert result.outcome.status == PROCESSED  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "where", "value"),
    [
        (GOOD.replace("20261123100000\r", "2023X\r"), "PV1-45", "2023X"),
        (GOOD.replace("|19700101|", "|1970X|"), "PID-7", "1970X"),
        # Year 9999 in a local time: past the end of the calendar in UTC.
        (GOOD.replace("|20261123101500||ADT", "|99991231235959||ADT"), "MSH-7", "9999"),
    ],
    ids=["bad-discharge-time", "bad-birth-date", "end-of-calendar"],
)
def test_unmappable_messages_are_dead_lettered_with_a_reason_and_no_phi(
        text: str, where: str, value: str) -> None:
    result = run(record(text))
    assert result.event is None  # type: ignore[attr-defined]
    assert location(result) == where  # type: ignore[arg-type]
    outcome = result.outcome  # type: ignore[attr-defined]
    assert outcome.status == DEADLETTERED and outcome.message_id == 7
    assert outcome.reason.startswith(where) and value not in outcome.reason
    assert value not in result.deadletter.reason  # type: ignore[attr-defined]


def test_an_unreadable_record_is_dead_lettered_without_an_outcome() -> None:
    result = run(b"not json")
    assert result.event is None and result.deadletter is not None  # type: ignore[attr-defined]
    assert result.outcome is None  # type: ignore[attr-defined]
    assert location(result) == "envelope"  # type: ignore[arg-type]
