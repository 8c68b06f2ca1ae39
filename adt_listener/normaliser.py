"""The normaliser's handler: one ``adt.raw.v1`` record in, an event or a dead letter out.

Pure: no Kafka, no database. The faust agent in :mod:`transcare.worker` decodes, calls
:func:`normalise`, publishes the result and records the message's outcome in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from adt_listener.hl7.er7 import Er7Error, Message
from adt_listener.mapping import Doc, MappingError, event_json, map_event
from adt_listener.store import DEADLETTERED, PROCESSED, Outcome
from schemas.adt_event import AdtEvent, DeadLetter, RawMessage


@dataclass(frozen=True, slots=True)
class Normalised:
    """The result for one record: exactly one of ``doc`` (the event, as
    :func:`~adt_listener.mapping.map_event` made it) and ``deadletter`` is set.

    ``outcome`` is None when the record was unreadable and names no stored message.
    """

    key: bytes
    doc: Doc | None
    deadletter: DeadLetter | None
    outcome: Outcome | None
    received_at: datetime | None = None

    @property
    def value(self) -> bytes:
        """The record to publish: the event's JSON, or the dead letter's."""
        if self.doc is not None:
            return event_json(self.doc)
        assert self.deadletter is not None
        return self.deadletter.model_dump_json().encode("utf-8")

    @property
    def event(self) -> AdtEvent | None:
        """The event as the model (validated now: the hot path publishes ``value`` only)."""
        return AdtEvent.model_validate(self.doc) if self.doc is not None else None

    @property
    def trigger(self) -> str:
        """MSH-9.2 of the event ('' for a dead letter or an event without one)."""
        return (self.doc["header"]["trigger_event"] or "") if self.doc is not None else ""


def normalise(key: bytes, value: bytes, time_zone: Callable[[str], ZoneInfo],
              now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Normalised:
    """Map one raw record. Never raises: anything that cannot be mapped is a dead letter."""
    try:
        raw = RawMessage.model_validate_json(value)
    except ValidationError as exc:
        return _unreadable(key, exc, now())
    try:
        doc = map_event(Message(raw.text), message_id=raw.message_id,
                        received_at=raw.received_at, tz=time_zone(raw.sending_facility))
    except MappingError as exc:
        return _dead(key, raw, exc.reason, exc.segment, exc.field, now())
    except Er7Error as exc:
        return _dead(key, raw, exc.reason, exc.segment, exc.field, now())
    except Exception as exc:  # a defect in mapping must never stop the stream
        return _dead(key, raw, f"unmappable message ({type(exc).__name__}); report it as a "
                     "defect", None, None, now())
    outcome = Outcome(raw.message_id, PROCESSED, None, raw.received_at)
    return Normalised(key, doc, None, outcome, raw.received_at)


def _dead(key: bytes, raw: RawMessage, reason: str, segment: str | None, field: int | None,
          at: datetime) -> Normalised:
    letter = DeadLetter(
        message_id=raw.message_id, facility=raw.sending_facility,
        control_id=raw.control_id or None, reason=reason, segment=segment, field=field,
        received_at=raw.received_at, deadlettered_at=at,
    )
    where = f"{segment}-{field}" if segment and field else (segment or "message")
    stored = reason if reason.startswith(where) else f"{where}: {reason}"
    return Normalised(key, None, letter,
                      Outcome(raw.message_id, DEADLETTERED, stored, raw.received_at),
                      raw.received_at)


def _unreadable(key: bytes, exc: ValidationError, at: datetime) -> Normalised:
    message_id = _message_id(key)
    letter = DeadLetter(message_id=message_id or 0, reason="record is not a raw_message.v1 "
                        f"envelope ({exc.error_count()} errors)", received_at=at,
                        deadlettered_at=at)
    return Normalised(key, None, letter, None)


def _message_id(key: bytes) -> int | None:
    text = key.decode("utf-8", "replace")
    return int(text[4:]) if text.startswith("msg-") and text[4:].isdigit() else None


def with_record_time(result: Normalised, timestamp_ms: int | None) -> Normalised:
    """The result with the record's Kafka timestamp (the relay's send) as the message's
    ``published_at``, which the relay leaves to the outcome where it comes first; never
    before the message was received (a broker's own clock may be behind the listener's)."""
    outcome = result.outcome
    if outcome is None or timestamp_ms is None or timestamp_ms < 0:
        return result
    published = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    if outcome.received_at is not None and published < outcome.received_at:
        published = outcome.received_at
    # Built directly: dataclasses.replace and NamedTuple._replace cost three times as much,
    # for every record the normaliser reads.
    return Normalised(result.key, result.doc, result.deadletter,
                      Outcome(outcome.message_id, outcome.status, outcome.reason,
                              outcome.received_at, published), result.received_at)


def location(result: Normalised) -> str:
    """Metrics label for a dead letter: ``PV1-45``, ``MSH`` or ``envelope``."""
    d = result.deadletter
    if d is None:
        return ""
    if d.segment and d.field:
        return f"{d.segment}-{d.field}"
    return d.segment or "envelope"


__all__ = ["Normalised", "normalise", "location", "with_record_time"]
