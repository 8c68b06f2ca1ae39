"""Deciding a match review (transitions/reviews.py) on SQLite and PostgreSQL: the event held back
is applied to the member the reviewer chose, once; "not enrolled" applies nothing; what cannot
be decided is refused with a status and a reason, and writes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.adt_builders import adt
from tests.contract.test_transitions_processor import NOW, dump, enrol, rows, run
from transcare.db.database import Database
from transcare.db.tables import episodes, match_reviews, outbox, processed_events
from transitions.model import Member
from transitions.processor import Config
from transitions.reviews import ReviewError, resolve_review

TWIN = Member("M2", "DOE", "JANE", dt.date(1960, 1, 2), "F", "5551234567", "12345", (), "low", "C1")
# Two members nobody can tell apart from the message: its events wait for a reviewer.
HELD = [adt("A04", "r1", mrn="X-1", authority="STMARYS", facility="STMARYS", visit="SV1"),
        adt("A03", "r2", mrn="X-1", authority="STMARYS", facility="STMARYS", visit="SV1",
            disposition="01")]


async def decide(db: Database, review_id: int, member_id: str | None, by: str = "S1") -> Any:
    return await db.write(lambda c: resolve_review(c, review_id, member_id, by, Config(), NOW))


async def held(db: Database) -> list[Any]:
    await enrol(db, TWIN)
    await run(db, HELD)
    return await rows(db, match_reviews, match_reviews.c.id)


async def test_the_chosen_member_gets_the_held_events_episode(database: Database) -> None:
    admitted, discharged = await held(database)
    assert await rows(database, episodes) == [] and admitted["event"]  # the event is kept
    first = await decide(database, admitted["id"], "M2")
    assert (first.outcome, first.review["status"], first.review["decided_member_id"],
            first.review["resolved_by"]) == ("applied", "resolved", "M2", "S1")
    assert first.review["resolved_at"] is not None and first.episode_events > 0
    second = await decide(database, discharged["id"], "M2")
    (episode,) = await rows(database, episodes)
    assert (episode["member_id"], episode["status"], episode["disposition"]) == (
        "M2", "discharged", "01")
    assert episode["coordinator_id"] == "C1" and second.outcome == "applied"
    done = {r["event_id"]: (r["outcome"], r["member_id"]) for r in await rows(database, processed_events)}
    assert done == {"STMARYS|r1": ("applied", "M2"), "STMARYS|r2": ("applied", "M2")}
    published = await database.run(lambda c: c.execute(select(outbox.c.payload).where(
        outbox.c.topic == "transitions.episodes.v1")).scalars().all())
    assert any('"PatientDischarged"' in p for p in published)  # the follow-up gets its work


async def test_a_decision_is_made_once_and_a_replay_after_it_changes_nothing(
        database: Database) -> None:
    admitted, _ = await held(database)
    await decide(database, admitted["id"], "M2")
    before = await dump(database)
    with pytest.raises(ReviewError) as again:
        await decide(database, admitted["id"], "M1")
    assert again.value.status == 409 and "decided already" in again.value.reason
    await run(database, HELD[:1])  # the feed sends the event again
    assert await dump(database) == before


async def test_not_enrolled_applies_nothing(database: Database) -> None:
    admitted, _ = await held(database)
    decision = await decide(database, admitted["id"], None)
    assert (decision.outcome, decision.review["decided_member_id"]) == ("not_enrolled", None)
    assert decision.review["status"] == "resolved" and await rows(database, episodes) == []
    outcomes = {r["event_id"]: r["outcome"] for r in await rows(database, processed_events)}
    assert outcomes["STMARYS|r1"] == "review"


@pytest.mark.parametrize(("review", "member", "by", "status", "reason"), [
    (999, "M2", "S1", 404, "no match review 999"),
    (None, "M9", "S1", 422, "member_id: 'M9' is not a member of the roster"),
    (None, "M2", "NOBODY", 422, "by: 'NOBODY' is not an active person of the staff directory"),
])
async def test_what_cannot_be_decided_is_refused_and_writes_nothing(
        database: Database, review: int | None, member: str, by: str, status: int,
        reason: str) -> None:
    admitted, _ = await held(database)
    before = await dump(database)
    with pytest.raises(ReviewError) as refused:
        await decide(database, review or admitted["id"], member, by)
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert await dump(database) == before


async def test_a_member_whose_visit_belongs_to_another_is_refused_and_rolled_back(
        database: Database) -> None:
    """M1 already holds STMARYS visit SV1 (by identifier); a reviewer choosing M2 for a held
    event of that visit would put one visit in two members' episodes."""
    admitted, _ = await held(database)
    await run(database, [adt("A04", "k1", mrn="1001", authority="GENHOSP", facility="STMARYS",
                             visit="SV1", message_id=5)])
    before = await dump(database)
    with pytest.raises(ReviewError) as refused:
        await decide(database, admitted["id"], "M2")
    assert refused.value.status == 409 and "belongs to another member's episode" in refused.value.reason
    assert await dump(database) == before


async def test_a_review_recorded_before_events_were_kept_says_what_to_do(database: Database) -> None:
    admitted, _ = await held(database)
    await database.write(lambda c: c.execute(update(match_reviews).values(event=None)))
    with pytest.raises(ReviewError) as refused:
        await decide(database, admitted["id"], "M2")
    assert refused.value.status == 409 and "migration 0007" in refused.value.reason
