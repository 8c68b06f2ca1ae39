"""The transitions processor against real databases (SQLite and PostgreSQL): episodes, the
timeline, the outbox, match reviews, and replays that change nothing."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text

from schemas.adt_event import AdtEvent
from tests.adt_builders import MESSY_MEMBERS, T0, adt, messy_batch
from transcare.db.database import Database
from transcare.db.tables import (
    episode_flags,
    episode_timeline,
    episodes,
    match_reviews,
    members,
    metadata,
    outbox,
    processed_events,
)
from transitions.directory_store import SqlAlchemyDirectory
from transitions.model import Member, MemberIdentifier, StaffMember
from transitions.processor import BatchResult, Config, Received, process_batch

NOW = T0 + timedelta(days=30)


async def enrol(db: Database, *extra: Member) -> None:
    directory = SqlAlchemyDirectory(db, lambda: T0)
    roster = [Member("M1", "DOE", "JANE", dt.date(1960, 1, 2), "F", "5551234567", "12345",
                     (MemberIdentifier("1001", "GENHOSP"), MemberIdentifier("M77", "MEDICAID")),
                     "low", "C1", "HH"), *extra]
    await directory.upsert_members(roster)
    await directory.upsert_staff([
        StaffMember("C1", "Coord One", "care_coordinator", "north", "S1", "C2"),
        StaffMember("C2", "Coord Two", "care_coordinator", "north", "S1", "C1"),
        StaffMember("S1", "Sup", "supervisor", "north"),
    ])


async def run(db: Database, events: Sequence[AdtEvent]) -> BatchResult:
    return await db.write(lambda conn: process_batch(conn, events, Config(), NOW))


async def dump(db: Database) -> dict[str, list[Any]]:
    """Every row of every table, for before/after comparisons."""
    def read(conn: Any) -> dict[str, list[Any]]:
        return {t.name: sorted(repr(tuple(r)) for r in conn.execute(select(t)))
                for t in metadata.sorted_tables}
    return await db.run(read)


async def rows(db: Database, table: Any, *order: Any) -> list[Any]:
    return await db.run(lambda conn: list(conn.execute(select(table).order_by(*order)).mappings()))


VISIT = [
    adt("A04", "c1", patient_class="E", at=T0),
    adt("A01", "c2", patient_class="I", visit="V2", at=T0 + timedelta(hours=5), location="4W"),
    adt("A02", "c3", patient_class="I", visit="V2", at=T0 + timedelta(days=1), location="5E"),
    adt("A03", "c4", patient_class="I", visit="V2", at=T0 + timedelta(days=4, hours=2),
        discharged_at=T0 + timedelta(days=4), disposition="01", location="5E",
        diagnoses=["I50.9", "E11.65"]),
]


async def test_an_ed_visit_admitted_transferred_and_discharged_is_one_episode(
        database: Database) -> None:
    await enrol(database)
    result = await run(database, VISIT)
    assert result.outcomes[("applied", "GENHOSP")] == 4
    (ep,) = await rows(database, episodes)
    assert (ep["member_id"], ep["kind"], ep["status"], ep["disposition"]) == (
        "M1", "inpatient", "discharged", "01")
    assert ep["discharged_at"] == T0 + timedelta(days=4)
    assert ep["coordinator_id"] == "C1" and ep["coordinator_reason"] == "roster"
    assert ep["detail"]["kind_history"] == ["ed"] and ep["detail"]["lace"]["c"] >= 1
    timeline = [r["type"] for r in await rows(database, episode_timeline, episode_timeline.c.id)]
    assert timeline == ["EpisodeOpened", "CoordinatorAssigned", "EpisodeUpdated",
                        "PatientTransferred", "PatientDischarged"]
    published = [json.loads(r["payload"]) for r in await rows(database, outbox, outbox.c.id)]
    assert [p["type"] for p in published] == timeline
    assert {r["key"] for r in await rows(database, outbox)} == {"M1"}
    assert published[-1]["episode"]["status"] == "discharged"


async def test_replaying_the_same_events_changes_nothing(database: Database) -> None:
    await enrol(database)
    await run(database, VISIT)
    before = await dump(database)
    again = await run(database, VISIT + VISIT)
    assert again.skipped == 8 and not again.outcomes
    assert await dump(database) == before


async def test_a_patient_not_on_the_roster_is_counted_and_goes_no_further(
        database: Database) -> None:
    await enrol(database)
    result = await run(database, [adt("A04", "x1", mrn="999", family="OTHER", given="PAT",
                                      birth_date=dt.date(1990, 5, 5))])
    assert result.outcomes == {("unmatched", "GENHOSP"): 1}
    assert await rows(database, episodes) == []
    (done,) = await rows(database, processed_events)
    assert (done["outcome"], done["member_id"]) == ("unmatched", None)


async def test_a_match_on_demographics_alone_opens_the_episode(database: Database) -> None:
    await enrol(database)
    await run(database, [adt("A04", "d1", mrn="X-55", authority="STMARYS", facility="STMARYS")])
    (ep,) = await rows(database, episodes)
    assert (ep["member_id"], ep["facility_key"]) == ("M1", "STMARYS")


async def test_an_ambiguous_match_goes_to_review_never_to_a_guess(database: Database) -> None:
    twin = Member("M2", "DOE", "JANE", dt.date(1960, 1, 2), "F", "5551234567", "12345", (),
                  "low", "C1")
    await enrol(database, twin)
    await run(database, [adt("A04", "r1", mrn="X-1", authority="STMARYS", facility="STMARYS")])
    assert await rows(database, episodes) == []
    (review,) = await rows(database, match_reviews)
    assert review["status"] == "pending" and review["event_id"] == "STMARYS|r1"
    assert sorted(c["member_id"] for c in review["candidates"]) == ["M1", "M2"]


async def test_a_readmission_flags_the_episode_and_raises_the_members_tier(
        database: Database) -> None:
    await enrol(database)
    await run(database, VISIT)
    back = T0 + timedelta(days=10)
    await run(database, [adt("A01", "c9", patient_class="I", visit="V9", at=back)])
    (flag,) = await rows(database, episode_flags)
    assert flag["flag"] == "readmission_30d"
    tier = await database.run(lambda c: c.execute(
        select(members.c.raised_tier).where(members.c.member_id == "M1")).scalar_one())
    assert tier == "high"


async def test_a_merge_moves_the_prior_identifiers_episodes(database: Database) -> None:
    other = Member("M9", "DOE", "JANE", dt.date(1960, 1, 2), "F", "", "",
                   (MemberIdentifier("2002", "GENHOSP"),), "low", "C2")
    await enrol(database, other)
    await run(database, [adt("A04", "m1", mrn="2002", visit="V5", phone=None, zip_code=None)])
    await run(database, [adt("A40", "m2", mrn="1001", visit=None, prior=[("2002", "GENHOSP")],
                             at=T0 + timedelta(hours=2))])
    (ep,) = await rows(database, episodes)
    assert ep["member_id"] == "M1" and ep["patient_identifier"] == "1001@GENHOSP"
    types = [r["type"] for r in await rows(database, episode_timeline, episode_timeline.c.id)]
    assert types[-1] == "EpisodesMerged"


async def test_processed_events_and_state_commit_together(database: Database) -> None:
    """A batch that fails part way leaves nothing behind (one transaction)."""
    await enrol(database)

    def failing(conn: Any) -> None:
        process_batch(conn, VISIT[:2], Config(), NOW)
        conn.execute(text("SELECT * FROM no_such_table"))

    try:
        await database.write(failing)
    except Exception:
        pass
    assert await rows(database, processed_events) == []
    assert await rows(database, episodes) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_members_are_applied_as_they_are_once_locked(database: Database,
                                                           monkeypatch: Any) -> None:
    """Regression: a batch applied events to the members it had read for matching, before
    taking their row locks; on PostgreSQL another worker's or an import's commit in between
    (here: the tier raised to high) was then overwritten or ignored. (On SQLite the write
    transaction holds the database's lock from its start, so nothing commits in between.)"""
    import transitions.processor as processor

    await enrol(database)
    original = processor.lock_members

    def lock_after_a_concurrent_change(conn: Any, member_ids: Sequence[str]) -> None:
        conn.execute(text("UPDATE members SET tier = 'high' WHERE member_id = 'M1'"))
        original(conn, member_ids)

    monkeypatch.setattr(processor, "lock_members", lock_after_a_concurrent_change)
    await run(database, [adt("A01", "t1", patient_class="I", visit="V1")])
    (tier,) = await database.run(lambda c: list(c.execute(text("SELECT tier FROM episodes"))
                                               .scalars()))
    assert tier == "high"


async def _ordered_rows(db: Database) -> dict[str, list[Any]]:
    """Every table's rows in primary-key order, without generated integer ids nor references
    to them (two runs on one database number their rows differently)."""
    generated = {("match_review_identifiers", "review_id")}

    def read(conn: Any) -> dict[str, list[Any]]:
        out = {}
        for t in metadata.sorted_tables:
            cols = [c for c in t.c if not (c.name == "id" and c.autoincrement is True)
                    and (t.name, c.name) not in generated]
            out[t.name] = [repr(tuple(r)) for r in
                           conn.execute(select(*cols).order_by(*t.primary_key.columns))]
        return out
    return await db.run(read)


async def _forget_processing(db: Database) -> None:
    def reset(conn: Any) -> None:
        for name in ("processed_events", "episode_flags", "episode_visits", "episode_timeline",
                     "episodes", "outbox", "match_reviews", "match_review_identifiers"):
            conn.execute(text(f"DELETE FROM {name}"))
        conn.execute(text("UPDATE members SET raised_tier = NULL"))
        conn.execute(text("DELETE FROM member_identifiers WHERE source = 'merge'"))
    await db.write(reset)


@pytest.mark.parametrize("with_merge", [False, True], ids=["no-merge", "merge"])
async def test_a_batch_writes_what_its_events_write_one_by_one(
        database: Database, monkeypatch: Any, with_merge: bool) -> None:
    """The batch's episodes are read once and written once (BatchEpisodes); the database it
    leaves is the one reading and writing for every event leaves, row for row and in order."""
    import transitions.processor as processor
    from transitions.episode_store import BatchEpisodes

    await enrol(database, *MESSY_MEMBERS)
    feed = messy_batch(with_merge)
    batched = await run(database, feed)
    held = await _ordered_rows(database)

    class OneByOne(BatchEpisodes):
        @classmethod
        def read(cls, conn: Any, member_ids: Any, visit_keys: Any) -> BatchEpisodes:
            return cls(retired=True)

    await _forget_processing(database)
    monkeypatch.setattr(processor, "BatchEpisodes", OneByOne)
    single = await run(database, feed)
    assert await _ordered_rows(database) == held
    assert batched == single
    assert batched.outcomes[("review", "GENHOSP")] == 1  # b16: V1 is M1's visit
    assert batched.episode_events > 20
    assert len(held["episodes"]) >= 4
    assert len(held["episode_flags"]) >= 2  # readmission_30d and left_ama on V9, read again


async def test_a_merge_locks_the_members_holding_its_prior_identifiers(
        database: Database, monkeypatch: Any) -> None:
    """Regression (found in review): a merge changes the episodes of the member holding its
    prior identifiers, but only the survivor was locked. On PostgreSQL another worker's batch
    holding that member's episodes could then write back what it had read before the merge
    committed, undoing it. Now both are locked, in one order, before anything is read."""
    import transitions.processor as processor

    await enrol(database, *MESSY_MEMBERS)  # M9 holds 2002@GENHOSP
    taken: list[list[str]] = []
    original = processor.lock_members

    def record(conn: Any, member_ids: Sequence[str]) -> None:
        taken.append(list(member_ids))
        original(conn, member_ids)

    monkeypatch.setattr(processor, "lock_members", record)
    await run(database, [adt("A04", "p1", mrn="2002", visit="V5", phone=None, zip_code=None)])
    await run(database, [adt("A40", "p2", visit=None, prior=[("2002", "GENHOSP")],
                             at=T0 + timedelta(hours=2))])
    assert taken == [["M9"], ["M1", "M9"]]
    (ep,) = await rows(database, episodes)
    assert ep["member_id"] == "M1"


def received(events: Sequence[AdtEvent]) -> list[Received]:
    """The events as the worker reads them off ``adt.events.v1``."""
    return [Received.of(e.model_dump_json().encode()) for e in events]


async def test_events_read_from_their_json_leave_what_whole_events_leave(
        database: Database) -> None:
    """The worker reads each record's view and the whole event only for possible members:
    the database it leaves is the one whole events leave, row for row."""
    await enrol(database, *MESSY_MEMBERS)
    strangers = [adt("A04", f"x{i}", mrn=f"X{i}", family="OTHER", given="PAT",
                     birth_date=dt.date(1990, 5, 5) + timedelta(days=i)) for i in range(5)]
    feed = messy_batch(True) + strangers
    whole = await run(database, feed)
    held = await _ordered_rows(database)
    await _forget_processing(database)
    read = await run(database, received(feed))
    assert await _ordered_rows(database) == held
    assert read == whole
    done = {r["event_id"]: r["outcome"] for r in await rows(database, processed_events)}
    assert [done[e.event_id] for e in strangers] == ["unmatched"] * 5


def _spoilt(event: AdtEvent) -> Received:
    """The event's JSON with a field outside the view that is not valid (a bad visit time)."""
    doc = json.loads(event.model_dump_json())
    doc["visit"]["admitted_at"] = "the day before yesterday"
    return Received.of(json.dumps(doc).encode())


async def test_an_enrolled_patients_event_not_valid_whole_is_failed_and_the_rest_go_on(
        database: Database) -> None:
    await enrol(database)
    stranger = adt("A04", "x1", mrn="999", family="OTHER", given="PAT",
                   birth_date=dt.date(1990, 5, 5))
    batch = [*received(VISIT[:2]), _spoilt(stranger), _spoilt(VISIT[3]), *received(VISIT[2:3])]
    result = await run(database, batch)
    assert result.outcomes == {("applied", "GENHOSP"): 3, ("failed", "GENHOSP"): 1,
                               ("unmatched", "GENHOSP"): 1}
    done = {r["event_id"]: r["outcome"] for r in await rows(database, processed_events)}
    assert done == {"GENHOSP|c1": "applied", "GENHOSP|c2": "applied", "GENHOSP|x1": "unmatched",
                    "GENHOSP|c3": "applied", "GENHOSP|c4": "failed"}
    # The failed one is processed again when it comes again (a replay, a fixed producer).
    again = await run(database, received(VISIT[3:]))
    assert again.outcomes == {("applied", "GENHOSP"): 1} and again.skipped == 0
    (ep,) = await rows(database, episodes)
    assert ep["status"] == "discharged"


@pytest.mark.parametrize("value", [b"not json", b'{"schema_version": 2}',
                                   b'{"schema_version": 1, "event_id": "x"}'])
def test_a_record_that_is_not_an_adt_event_is_dropped_and_counted(value: bytes) -> None:
    from transcare import metrics
    from transcare.transitions_agent import decode

    failed = metrics.ADT_EVENTS_HANDLED.labels("failed", "")
    before = failed._value.get()
    good = VISIT[0].model_dump_json().encode()
    assert [r.view.event_id for r in decode([value, good])] == ["GENHOSP|c1"]
    assert failed._value.get() == before + 1


async def test_a_readable_copy_stands_in_for_an_unreadable_one_in_the_same_batch(
        database: Database) -> None:
    """Replaying the topic can bring two records of one event into one batch: one the
    normaliser wrote before a fix (not a valid event whole), one after. The readable copy is
    processed, whichever comes first; the unreadable one alone is recorded failed."""
    await enrol(database)
    batch = [*received(VISIT[:1]), _spoilt(VISIT[1]), *received(VISIT[1:2])]
    result = await run(database, batch)
    assert result.outcomes == {("applied", "GENHOSP"): 2}
    assert result.skipped == 1
    done = {r["event_id"]: r["outcome"] for r in await rows(database, processed_events)}
    assert done == {"GENHOSP|c1": "applied", "GENHOSP|c2": "applied"}


async def test_a_batch_deletes_processed_rows_only_where_a_try_failed(database: Database) -> None:
    """Each batch looks up failed tries by key and deletes only where it found some: a DELETE
    by the batch's ids every time kept a whole-table plan on PostgreSQL, to delete nothing."""
    await enrol(database)
    sent: list[str] = []

    def run_noting(events: Sequence[Any]) -> Any:
        def go(conn: Any) -> BatchResult:
            def note(*args: Any) -> None:
                sent.append(args[2])

            event.listen(conn, "before_cursor_execute", note)
            try:
                return process_batch(conn, events, Config(), NOW)
            finally:
                event.remove(conn, "before_cursor_execute", note)

        return database.write(go)

    stranger = adt("A04", "x1", mrn="999", family="OTHER", given="PAT",
                   birth_date=dt.date(1990, 5, 5))
    await run_noting([*received(VISIT[:1]), _spoilt(VISIT[1]), *received([stranger])])
    assert not [s for s in sent if s.startswith("DELETE FROM processed_events")]
    sent.clear()
    result = await run_noting(received(VISIT[1:2]))  # the failed try, again
    assert result.outcomes == {("applied", "GENHOSP"): 1}
    assert len([s for s in sent if s.startswith("DELETE FROM processed_events")]) == 1
    done = {r["event_id"]: r["outcome"] for r in await rows(database, processed_events)}
    assert done == {"GENHOSP|c1": "applied", "GENHOSP|c2": "applied", "GENHOSP|x1": "unmatched"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_failed_row_committed_meanwhile_is_replaced(
        database: Database, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL reads other transactions' commits mid-transaction (READ COMMITTED): a
    ``failed`` row another worker commits for an event after this batch looked for one is
    replaced all the same, not a primary-key error. (SQLite: the batch holds the write lock.)"""
    import asyncio
    import threading

    import asyncpg
    from sqlalchemy.engine import make_url

    import transitions.processor as processor

    await enrol(database)
    await run(database, received(VISIT[:1]))
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)

    async def other_worker_fails_c2() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "INSERT INTO processed_events (event_id, message_id, facility, outcome, member_id,"
            " processed_at) VALUES ('GENHOSP|c2', 2, 'GENHOSP', 'failed', NULL, now())")
        await conn.close()

    looked = processor._unprocessed

    def unprocessed_then_a_commit(conn: Any, events: Any) -> Any:
        found = looked(conn, events)
        thread = threading.Thread(target=asyncio.run, args=(other_worker_fails_c2(),))
        thread.start()
        thread.join()
        return found

    monkeypatch.setattr(processor, "_unprocessed", unprocessed_then_a_commit)
    result = await run(database, received(VISIT[1:2]))
    assert result.outcomes == {("applied", "GENHOSP"): 1}
    done = {r["event_id"]: r["outcome"] for r in await rows(database, processed_events)}
    assert done == {"GENHOSP|c1": "applied", "GENHOSP|c2": "applied"}


async def test_an_a12_in_a_later_batch_reads_the_transfer_history_back(database: Database) -> None:
    """What a transfer changed (level of care, service) is stored with the episode, so an A12
    processed in another transaction, from the database, undoes it."""
    await enrol(database)
    await run(database, [adt("A01", "t1", patient_class="I", location="4W", service="MED"),
                         adt("A02", "t2", patient_class="I", location="SNF", service="SNF",
                             at=T0 + timedelta(hours=5))])
    (moved,) = await rows(database, episodes)
    assert moved["kind"] == "post_acute"
    await run(database, [adt("A12", "t3", patient_class="I", location=None,
                             at=T0 + timedelta(hours=6))])
    (back,) = await rows(database, episodes)
    assert (back["kind"], back["location"]) == ("inpatient", moved["detail"]["location_history"][0])
    assert back["detail"]["hospital_service"] == "MED" and back["detail"]["transfer_history"] == []
    # the same A12 resent (a new MSH-10) in a later batch: the episode keeps when the A12 was
    # recorded, so the resend is a duplicate, not the cancel of a transfer before
    await run(database, [adt("A12", "t4", patient_class="I", location=None,
                             at=T0 + timedelta(hours=6))])
    assert (await rows(database, episodes))[0]["detail"] == back["detail"]
    outcomes = {r["event_id"]: r["outcome"] for r in await rows(database, processed_events)}
    assert outcomes["GENHOSP|t4"] == "duplicate"
