"""Deciding a match review (transitions/reviews.py) on SQLite and PostgreSQL: the event held back
is applied to the member the reviewer chose, once; "not enrolled" applies nothing; what cannot
be decided is refused with a status and a reason, and writes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select, text, update

from schemas.adt_event import Insurance
from tests.adt_builders import T0, adt
from tests.contract.conftest import POSTGRES_ENV
from tests.contract.test_transitions_processor import NOW, dump, enrol, rows, run
from transcare.db.database import Database, open_database
from transcare.db.engine import async_url, create_engine
from transcare.db.tables import (
    episodes,
    match_review_identifiers,
    match_reviews,
    member_identifiers,
    metadata,
    outbox,
    processed_events,
)
from transitions.directory_store import MERGE, SqlAlchemyDirectory, learn_identifiers
from transitions.model import Member, MemberIdentifier
from transitions.processor import VISIT_CONFLICT, Config, process_batch
from transitions.reviews import ReviewError, forget_identifier, resolve_review

TWIN = Member("M2", "DOE", "JANE", dt.date(1960, 1, 2), "F", "5551234567", "12345", (), "low", "C1")
# Two members nobody can tell apart from the message: its events wait for a reviewer.
HELD = [adt("A04", "r1", mrn="X-1", authority="STMARYS", facility="STMARYS", visit="SV1"),
        adt("A03", "r2", mrn="X-1", authority="STMARYS", facility="STMARYS", visit="SV1",
            disposition="01")]


async def decide(db: Database, review_id: int, member_id: str | None, by: str = "S1") -> Any:
    return await db.write(lambda c: resolve_review(c, review_id, member_id, by, Config(), NOW))


async def outcomes(db: Database) -> dict[str, tuple[str, str | None]]:
    """Each event's processed_events outcome and member."""
    return {r["event_id"]: (r["outcome"], r["member_id"]) for r in await rows(db, processed_events)}


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
    # the patient's discharge, held back the same way, follows the decision
    assert first.also_decided == [discharged["id"]]
    (episode,) = await rows(database, episodes)
    assert (episode["member_id"], episode["status"], episode["disposition"]) == (
        "M2", "discharged", "01")
    assert episode["coordinator_id"] == "C1"
    done = await outcomes(database)
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


async def test_a_review_recorded_before_events_were_kept_is_applied_when_replayed(
        database: Database) -> None:
    """A review from before migration 0007 holds no event: the decision is recorded and the
    event's processed_events row dropped; the message's replay then applies the decision
    (matching still finds the two members alike). Before, the advice given was to replay, and
    the replay skipped the event (its row said "review")."""
    admitted, _ = await held(database)
    await database.write(lambda c: c.execute(update(match_reviews).values(event=None)))
    decision = await decide(database, admitted["id"], "M2")
    assert (decision.outcome, decision.review["decided_member_id"]) == ("replay", "M2")
    assert await rows(database, episodes) == []
    replayed = await run(database, HELD[:1])  # what `transcare replay` has the worker do
    assert dict(replayed.outcomes) == {("applied", "STMARYS"): 1}
    (episode,) = await rows(database, episodes)
    assert episode["member_id"] == "M2"


async def test_not_enrolled_keeps_no_copy_of_the_event(database: Database) -> None:
    admitted, _ = await held(database)
    await decide(database, admitted["id"], None)
    (review, _) = await rows(database, match_reviews, match_reviews.c.id)
    assert review["event"] is None and review["status"] == "resolved"


@pytest.fixture
async def pg_database(postgres_url: str | None) -> AsyncIterator[tuple[Database, str]]:
    """The PostgreSQL contract database alone (as ``database`` makes it), for the tests of two
    overlapping transactions; reported as not run without TRANSCARE_TEST_POSTGRES_URL."""
    if postgres_url is None:
        pytest.skip(f"PostgreSQL contract tests did not run: set {POSTGRES_ENV}")
    db = open_database(postgres_url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    await db.run(lambda conn: conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY")))
    yield db, postgres_url
    await db.dispose()


M1_VISIT = adt("A04", "k1", mrn="1001", authority="GENHOSP", facility="STMARYS", visit="SV1",
               message_id=5)


async def _overlapping(database_url: str, first: Callable[[Any], Any],
                       second: Callable[[Any], Any]) -> tuple[Any, Any]:
    """``first`` runs in a transaction left open while ``second`` starts in another one; then
    ``first`` commits and ``second`` finishes (or raises) and commits."""
    engine = create_engine(async_url(database_url))
    one, two = await engine.connect(), await engine.connect()
    try:
        await one.begin()
        done = await one.run_sync(first)
        await two.begin()
        later = asyncio.create_task(two.run_sync(second))
        await asyncio.sleep(0.5)
        waited = not later.done()
        await one.commit()
        try:
            result: Any = await later
            await two.commit()
        except ReviewError as exc:
            result = exc
            await two.rollback()
        return (done, waited), result
    finally:
        await one.close()
        await two.close()
        await engine.dispose()


async def test_a_worker_and_a_reviewer_on_one_visit_for_two_members_take_turns(
        pg_database: tuple[Database, str]) -> None:
    """Regression (review), PostgreSQL: the worker applies M1's event of STMARYS/SV1 and has
    not committed; a reviewer gives the held SV1 event to M2. Run one after the other the
    reviewer is refused; overlapping, the reviewer overwrote M1's episode (the id comes from
    the visit). With the visit locked the reviewer waits, then is refused. (On SQLite the
    database's write lock makes every two writers take turns.)"""
    database, database_url = pg_database
    admitted, _ = await held(database)
    (_, waited), result = await _overlapping(
        database_url, lambda c: process_batch(c, [M1_VISIT], Config(), NOW),
        lambda c: resolve_review(c, admitted["id"], "M2", "S1", Config(), NOW))
    assert waited and isinstance(result, ReviewError) and result.status == 409
    (episode,) = await rows(database, episodes)
    assert episode["member_id"] == "M1"


async def test_a_reviewer_then_a_worker_on_one_visit_for_two_members_take_turns(
        pg_database: tuple[Database, str]) -> None:
    """The other order: the reviewer's decision (M2) commits first; the worker's M1 event of
    the same visit then finds M2's episode and goes to review, instead of taking it over."""
    database, database_url = pg_database
    admitted, _ = await held(database)
    (decision, waited), worked = await _overlapping(
        database_url, lambda c: resolve_review(c, admitted["id"], "M2", "S1", Config(), NOW),
        lambda c: process_batch(c, [M1_VISIT], Config(), NOW))
    assert waited and decision.outcome == "applied"
    assert dict(worked.outcomes) == {("review", "STMARYS"): 1}
    (episode,) = await rows(database, episodes)
    assert episode["member_id"] == "M2"


async def test_two_reviewers_deciding_one_patients_events_at_once_take_turns(
        pg_database: tuple[Database, str]) -> None:
    """PostgreSQL: one reviewer decides the admission (and with it the patient's discharge,
    waiting too) and has not committed; another decides the discharge. The second waits, then
    is told it was decided already; the stay is applied once."""
    database, database_url = pg_database
    admitted, discharged = await held(database)
    (first, waited), second = await _overlapping(
        database_url, lambda c: resolve_review(c, admitted["id"], "M2", "S1", Config(), NOW),
        lambda c: resolve_review(c, discharged["id"], "M2", "C1", Config(), NOW))
    assert waited and first.also_decided == [discharged["id"]]
    assert isinstance(second, ReviewError) and second.status == 409
    assert "decided already (by S1)" in second.reason
    (episode,) = await rows(database, episodes)
    assert (episode["member_id"], episode["status"]) == ("M2", "discharged")


async def test_the_decision_teaches_the_patients_identifier_to_the_member(database: Database) -> None:
    """Regression (review): a reviewer chose M2 for the patient X-1 of STMARYS, and every later
    message of that patient waited for a reviewer again. Now the identifier is M2's (source
    review): the next message matches at once; M2's own roster import, not listing it, keeps
    it; the roster giving it to another member (a reviewer's mistake) is the roster's word."""
    admitted, _ = await held(database)
    await decide(database, admitted["id"], "M2")
    learned = await rows(database, member_identifiers, member_identifiers.c.value)
    assert [(r["value"], r["authority"], r["member_id"], r["source"]) for r in learned
            if r["member_id"] == "M2"] == [("X-1", "STMARYS", "M2", "review")]
    later = await run(database, [adt("A04", "r3", mrn="X-1", authority="STMARYS",
                                     facility="STMARYS", visit="SV2", message_id=7)])
    assert [o[0] for o in later.outcomes] == ["applied"]
    assert {r["event_id"]: r["member_id"] for r in await rows(database, processed_events)
            }["STMARYS|r3"] == "M2"
    assert len(await rows(database, match_reviews)) == 2  # no new review
    directory = SqlAlchemyDirectory(database, lambda: NOW)
    x1 = MemberIdentifier("X-1", "STMARYS")
    kept = await directory.upsert_members([replace(TWIN, phone="5559999999")])
    assert not kept.errors and x1 in (await directory.members(["M2"]))["M2"].identifiers
    taken = await directory.upsert_members([replace(TWIN, member_id="M3", identifiers=(x1,))])
    assert not taken.errors
    owners = await directory.members_by_identifiers([x1])
    assert owners == {x1: "M3"}


async def test_not_enrolled_teaches_nothing(database: Database) -> None:
    admitted, _ = await held(database)
    await decide(database, admitted["id"], None)
    assert {r["member_id"] for r in await rows(database, member_identifiers)} == {"M1"}


async def test_an_identifier_without_an_assigning_authority_is_not_learned(database: Database) -> None:
    """A bare PID-3 value (no CX-4 or CX-6) names nobody outside its sender: learned, it would
    match another facility's patient of the same number to the member."""
    await enrol(database, TWIN)
    await run(database, [adt("A04", "b1", mrn="X-2", authority="", facility="STMARYS", visit="SV3")])
    (review,) = await rows(database, match_reviews)
    decision = await decide(database, review["id"], "M2")
    assert decision.outcome == "applied"
    assert {r["member_id"] for r in await rows(database, member_identifiers)} == {"M1"}


async def test_the_patients_other_waiting_events_follow_the_decision(database: Database) -> None:
    """Regression (review): the reviewer decided the admission and still had to decide the
    patient's discharge, held back the same way, one by one. Once the identifier is the
    member's, the patient's other waiting events are matched again, in message order, and
    decided by the same reviewer; an event of another patient waits on."""
    await enrol(database, TWIN)
    other = adt("A04", "o1", mrn="Y-9", authority="STMARYS", facility="STMARYS", visit="SV9",
                message_id=3)
    await run(database, [*HELD, other])
    admitted, discharged, stranger = await rows(database, match_reviews, match_reviews.c.id)
    decision = await decide(database, discharged["id"], "M2")  # the later one first
    assert decision.also_decided == [admitted["id"]]
    now = {r["id"]: r for r in await rows(database, match_reviews)}
    assert (now[admitted["id"]]["status"], now[admitted["id"]]["decided_member_id"],
            now[admitted["id"]]["resolved_by"]) == ("resolved", "M2", "S1")
    assert now[stranger["id"]]["status"] == "pending"
    (episode,) = await rows(database, episodes)
    assert (episode["member_id"], episode["status"], episode["admitted_at"] is not None) == (
        "M2", "discharged", True)
    done = await outcomes(database)
    assert done["STMARYS|r1"] == ("applied", "M2") and done["STMARYS|o1"] == ("review", None)


async def test_the_members_roster_row_confirming_a_learned_identifier_makes_it_the_rosters(
        database: Database) -> None:
    """Regression (review): M2's own row listing the identifier a decision taught it left it a
    reviewer's, so a later file giving it to M3 took it silently (and M2's next import was
    refused): the result depended on the order of the files."""
    admitted, _ = await held(database)
    await decide(database, admitted["id"], "M2")
    directory = SqlAlchemyDirectory(database, lambda: NOW)
    x1 = MemberIdentifier("X-1", "STMARYS")
    assert not (await directory.upsert_members([replace(TWIN, identifiers=(x1,))])).errors
    sources = {(r["value"], r["member_id"]): r["source"] for r in await rows(database, member_identifiers)}
    assert sources[("X-1", "M2")] == "roster"
    other = await directory.upsert_members([replace(TWIN, member_id="M3", identifiers=(x1,))])
    assert [e.reason for e in other.errors] == [
        "identifiers: the STMARYS entry already belongs to member M2"]
    assert await directory.members_by_identifiers([x1]) == {x1: "M2"}


async def test_an_insurance_member_id_is_not_learned(database: Database) -> None:
    """Regression (review): IN1-36/49 is often the subscriber's number, shared by a family.
    Learned from a decision, it matched the member's spouse (not enrolled, another name and
    birth date) at 100 and opened an episode for the member."""
    policy = (Insurance(plan_id="AETNA", member_id="W555"),)
    await enrol(database, TWIN)
    held_event = adt("A04", "i1", mrn="X-9", authority="STMARYS", facility="STMARYS", visit="SV9")
    await run(database, [held_event.model_copy(update={"insurance": policy})])
    (review,) = await rows(database, match_reviews)
    await decide(database, review["id"], "M2")
    learned = {(r["value"], r["authority"]) for r in await rows(database, member_identifiers)
               if r["member_id"] == "M2"}
    assert learned == {("X-9", "STMARYS")}
    spouse = adt("A04", "s1", mrn="X-77", authority="STMARYS", facility="STMARYS", visit="SV77",
                 given="JOHN", birth_date=dt.date(1958, 6, 7), sex="M", phone=None, zip_code=None)
    await run(database, [spouse.model_copy(update={"insurance": policy})])
    assert [r["member_id"] for r in await rows(database, episodes)] == ["M2"]


async def test_a_waiting_event_not_the_members_on_its_date_waits_on(database: Database) -> None:
    """Regression (review): M2's enrolment ended before the held discharge. Deciding the
    admission matched the discharge again ("not enrolled on the event date": unmatched), and
    its review was marked decided for M2 though nothing was applied: it left the queue unseen.
    Now it is undone and waits, with its processed_events row as it was."""
    await enrol(database, replace(TWIN, enrolled_to=dt.date(2026, 3, 3)))
    late = adt("A03", "r2", mrn="X-1", authority="STMARYS", facility="STMARYS", visit="SV1",
               disposition="01", at=T0 + dt.timedelta(days=5), message_id=2)
    await run(database, [HELD[0], late])
    admitted, discharged = await rows(database, match_reviews, match_reviews.c.id)
    decision = await decide(database, admitted["id"], "M2")
    done = await outcomes(database)
    review = {r["id"]: r for r in await rows(database, match_reviews)}[discharged["id"]]
    assert done["STMARYS|r2"] == ("review", None)
    assert decision.also_decided == [] and review["status"] == "pending"


async def test_a_waiting_event_whose_visit_is_another_members_says_so(database: Database) -> None:
    """Regression (review of the sixth session, F5): the patient's other waiting event, matched
    again once the decision taught the identifier, is for a visit another member's episode
    holds. It waits on, and its review now says why (it kept the reason of its first match,
    "ambiguous", with the twins as candidates), so the reviewer is not surprised by a 409."""
    await enrol(database, TWIN)
    other_visit = adt("A04", "r3", mrn="X-1", authority="STMARYS", facility="STMARYS",
                      visit="SV2", message_id=3)
    m1_visit = adt("A04", "k1", mrn="1001", authority="GENHOSP", facility="STMARYS",
                   visit="SV2", message_id=2)
    await run(database, [HELD[0], m1_visit, other_visit])
    admitted, waiting = await rows(database, match_reviews, match_reviews.c.id)
    assert waiting["reason"] != VISIT_CONFLICT
    decision = await decide(database, admitted["id"], "M2")
    assert decision.also_decided == []
    now = {r["id"]: r for r in await rows(database, match_reviews)}[waiting["id"]]
    assert (now["status"], now["reason"]) == ("pending", VISIT_CONFLICT)
    assert [c["member_id"] for c in now["candidates"]] == ["M2"]
    done = await outcomes(database)
    assert done["STMARYS|r3"] == ("review", None)


async def test_a_decided_review_is_never_rewritten_by_matching(database: Database) -> None:
    """A review from before migration 0007 is decided for M2 (the replay applies it); M1 then
    takes the visit, and the message's replay goes to review again as a visit conflict. The
    decided review stays as decided (reason, candidates, status); a second replay changes
    nothing."""
    admitted, _ = await held(database)
    await database.write(lambda c: c.execute(update(match_reviews).values(event=None)))
    await decide(database, admitted["id"], "M2")
    await run(database, [adt("A04", "k1", mrn="1001", authority="GENHOSP", facility="STMARYS",
                             visit="SV1", message_id=5)])
    before = {r["id"]: r for r in await rows(database, match_reviews)}[admitted["id"]]
    replayed = await run(database, HELD[:1])
    assert dict(replayed.outcomes) == {("review", "STMARYS"): 1}
    after = {r["id"]: r for r in await rows(database, match_reviews)}[admitted["id"]]
    assert after == before and after["reason"] != VISIT_CONFLICT
    snapshot = await dump(database)
    await run(database, HELD[:1])
    assert await dump(database) == snapshot


async def forget(db: Database, member_id: str, value: str, authority: str,
                 by: str = "S1") -> Any:
    return await db.write(lambda c: forget_identifier(c, member_id, value, authority, by))


async def test_an_identifier_a_mistaken_decision_taught_is_forgotten(database: Database) -> None:
    """The reviewer chose M2 for the patient X-1 of STMARYS by mistake: M2 learned X-1, and
    the patient's next message went to M2 at once. Forgotten (written as a person types it),
    M2 no longer holds it; what the decision applied stays M2's; the patient's next message
    waits for a reviewer again."""
    admitted, _ = await held(database)
    await decide(database, admitted["id"], "M2")
    done = await forget(database, "M2", " x-1 ", "stmarys")
    assert (done.member_id, done.identifier, done.source) == (
        "M2", MemberIdentifier("X-1", "STMARYS"), "review")
    assert [r["member_id"] for r in await rows(database, member_identifiers)] == ["M1", "M1"]
    (episode,) = await rows(database, episodes)
    assert episode["member_id"] == "M2"
    later = await run(database, [adt("A04", "r3", mrn="X-1", authority="STMARYS",
                                     facility="STMARYS", visit="SV2", message_id=7)])
    assert [o[0] for o in later.outcomes] == ["review"]
    again = await database.write(lambda c: _refused(c, "M2", "X-1", "STMARYS", "S1"))
    assert (again.status, again.reason) == (404, "member M2 holds no identifier X-1@STMARYS")


async def test_an_identifier_learned_from_a_merge_is_forgotten_too(database: Database) -> None:
    await enrol(database, TWIN)
    await database.write(lambda c: learn_identifiers(
        c, "M2", [MemberIdentifier("OLD-7", "STMARYS")], MERGE))
    done = await forget(database, "M2", "OLD-7", "STMARYS")
    assert done.source == "merge"
    assert {r["member_id"] for r in await rows(database, member_identifiers)} == {"M1"}


def _refused(conn: Any, member_id: str, value: str, authority: str, by: str) -> ReviewError:
    with pytest.raises(ReviewError) as caught:
        forget_identifier(conn, member_id, value, authority, by)
    return caught.value


@pytest.mark.parametrize(("member_id", "value", "authority", "by", "status", "says"), [
    ("M1", "1001", "GENHOSP", "S1", 409, "one of member M1's roster identifiers"),
    ("M2", "1001", "GENHOSP", "S1", 404, "member M2 holds no identifier 1001@GENHOSP"),
    ("M2", "X-1", "OTHER", "S1", 404, "member M2 holds no identifier X-1@OTHER"),
    ("M9", "X-1", "STMARYS", "S1", 404, "no member 'M9' in the roster"),
    ("M2", "X-1", "STMARYS", "NOBODY", 422, "by: 'NOBODY' is not an active person"),
    ("M2", " ", "STMARYS", "S1", 422, "value: the identifier's value is empty"),
])
async def test_what_cannot_be_forgotten_is_refused_and_writes_nothing(
        database: Database, member_id: str, value: str, authority: str, by: str, status: int,
        says: str) -> None:
    admitted, _ = await held(database)
    await decide(database, admitted["id"], "M2")
    before = await dump(database)
    refused = await database.write(lambda c: _refused(c, member_id, value, authority, by))
    assert refused.status == status and says in refused.reason
    assert await dump(database) == before


async def test_a_decision_reads_only_the_patients_waiting_events(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (review): a decision read and decoded every pending review in the queue to
    find the patient's other waiting events, a cost per decision growing with the queue. Now
    it decodes the event it applies and the patient's waiting ones, however many other
    patients wait; their reviews keep their identifiers, the decided ones' go (PHI)."""
    import transitions.reviews as reviews

    await enrol(database, TWIN)
    others = [adt("A04", f"o{n}", mrn=f"Y-{n}", authority="STMARYS", facility="STMARYS",
                  visit=f"OV{n}", message_id=10 + n) for n in range(25)]
    await run(database, [*HELD, *others])
    admitted, discharged, *_ = await rows(database, match_reviews, match_reviews.c.id)
    decoded: list[str] = []
    real = reviews._event

    def counting(row: Any) -> Any:
        decoded.append(row["event"])
        return real(row)

    monkeypatch.setattr(reviews, "_event", counting)
    decision = await decide(database, admitted["id"], "M2")
    assert decision.also_decided == [discharged["id"]]
    assert len(decoded) == 2
    kept = await rows(database, match_review_identifiers)
    assert {r["review_id"] for r in kept} == {
        r["id"] for r in await rows(database, match_reviews) if r["status"] == "pending"}
    assert len(kept) == 25 and "X-1" not in {r["value"] for r in kept}


async def test_a_review_decided_not_enrolled_drops_its_identifiers(database: Database) -> None:
    admitted, discharged = await held(database)
    assert {r["review_id"] for r in await rows(database, match_review_identifiers)} == {
        admitted["id"], discharged["id"]}
    await decide(database, admitted["id"], None)
    assert [r["review_id"] for r in await rows(database, match_review_identifiers)] == [
        discharged["id"]]


async def test_a_review_an_earlier_version_held_back_is_found_all_the_same(
        database: Database) -> None:
    """Regression (review): during a rolling upgrade a worker of the version before migration
    0008 holds events back without identifier rows; a decision found only reviews with rows,
    so the patient's discharge waited on. Such reviews are indexed when a decision looks."""
    admitted, discharged = await held(database)
    await database.write(lambda c: c.execute(match_review_identifiers.delete().where(
        match_review_identifiers.c.review_id == discharged["id"])))  # as an old worker left it
    decision = await decide(database, admitted["id"], "M2")
    assert decision.also_decided == [discharged["id"]]
    assert await rows(database, match_review_identifiers) == []  # both decided: rows gone


async def test_an_event_without_an_identifier_a_member_could_hold_is_indexed_empty(
        database: Database) -> None:
    """Bare numbers (no authority) are held by no member: they are not kept (PHI for
    nothing); the review gets one empty row, so a decision does not take it for one an
    earlier version held back and decode it again each time."""
    await enrol(database, TWIN)
    await run(database, [adt("A04", "b1", mrn="X-2", authority="", facility="STMARYS",
                             visit="SV3")])
    (review,) = await rows(database, match_reviews)
    assert [(r["value"], r["authority"], r["review_id"])
            for r in await rows(database, match_review_identifiers)] == [("", "", review["id"])]
