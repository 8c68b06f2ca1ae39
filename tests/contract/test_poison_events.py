"""One event that always fails in a worker's batch (SQLite and PostgreSQL): the batch is split
in halves down to that event, which is recorded or logged as failed, and every other event of
the batch is processed, in a few transactions rather than one per event."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import select

from followup.service import plan_batch
from schemas.adt_event import AdtEvent
from schemas.episode_event import EpisodeEvent
from tests.adt_builders import adt
from tests.contract.test_followup_service import CTX, setup, stay
from transcare import followup_agent, transitions_agent
from transcare.db.database import Database
from transcare.db.tables import planned_events, processed_events
from transitions.processor import process_batch


class Poisoned:
    """Wraps a batch function: counts its calls, and raises for a batch holding the poison."""

    def __init__(self, real: Any, poison: str) -> None:
        self.real, self.poison, self.calls = real, poison, 0

    def __call__(self, conn: Any, events: Sequence[Any], *args: Any) -> Any:
        self.calls += 1
        if any(e.event_id == self.poison for e in events):
            raise ValueError("an event the processor cannot handle")
        return self.real(conn, events, *args)


def unknown_patients(n: int) -> list[AdtEvent]:
    return [adt("A04", f"u{i}", mrn=f"X{i}", family=f"NOBODY{i}",
                birth_date=dt.date(1990, 1, 1) + dt.timedelta(days=i), message_id=i + 1)
            for i in range(n)]


async def test_a_poison_adt_event_is_recorded_failed_and_the_rest_processed(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    events = unknown_patients(300)
    poison = events[137].event_id
    fake = Poisoned(process_batch, poison)
    monkeypatch.setattr(transitions_agent, "process_batch", fake)
    await transitions_agent.handle(database, events, transitions_agent.Config())
    rows = await database.run(lambda c: dict(c.execute(
        select(processed_events.c.event_id, processed_events.c.outcome)).all()))
    assert rows == {e.event_id: "failed" if e.event_id == poison else "unmatched" for e in events}
    assert fake.calls <= 19  # 2 log2 300 + 1 (one per event would be 301)


async def test_a_poison_episode_event_is_logged_and_the_rest_planned(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await setup(database)
    published = await stay(database)
    discharged = next(e for e in published if e.type == "PatientDischarged")
    events: list[EpisodeEvent] = published + [
        discharged.model_copy(update={"event_id": f"{discharged.event_id}-again{i}"})
        for i in range(100)]
    poison = events[len(events) // 2].event_id
    fake = Poisoned(plan_batch, poison)
    monkeypatch.setattr(followup_agent, "plan_batch", fake)
    changes = await followup_agent.plan(database, events, CTX)
    planned = await database.run(lambda c: set(c.execute(select(planned_events.c.event_id))
                                               .scalars()))
    assert planned == {e.event_id for e in events} - {poison}
    assert changes > 0
    assert fake.calls <= 2 * len(events).bit_length() + 1  # not one per event
