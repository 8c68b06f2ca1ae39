"""The follow-up service against real databases (SQLite and PostgreSQL): ADT events through the
transitions processor, their episode events through the planner, then the ladder with a moved
clock, exactly once, and the commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from followup.calendar import ProgramCalendar
from followup.commands import CommandError
from followup.rules_loader import default_rules
from followup.service import FollowupContext, fire_due_steps, plan_batch
from followup.task_commands import claim_task, complete_task, reassign_task
from followup.task_store import BatchTasks, find_tasks, history, load_tasks, save_tasks
from schemas.adt_event import AdtEvent
from schemas.episode_event import EpisodeEvent
from tests.adt_builders import MESSY_MEMBERS, T0, adt, messy_batch
from transcare.db.database import Database, open_database
from transcare.db.tables import episode_timeline, metadata, notifications, outbox, task_history
from transitions.directory_store import SqlAlchemyDirectory
from transitions.model import Member, MemberIdentifier, StaffMember
from transitions.processor import Config, process_batch

CTX = FollowupContext(default_rules(), ProgramCalendar("America/New_York"), False, "http://tc")
ADMITTED = T0 - timedelta(days=3)  # a Friday 08:00 UTC
DISCHARGED = T0 + timedelta(hours=6)  # Monday 14:00 UTC


async def setup(db: Database, *, opted_out: bool = False) -> None:
    directory = SqlAlchemyDirectory(db, lambda: T0)
    await directory.upsert_members([
        Member("M1", "DOE", "JANE", dt.date(1960, 1, 2), "F", "5551234567", "12345",
               (MemberIdentifier("1001", "GENHOSP"),), "low", "C1", opted_out=opted_out)])
    await directory.upsert_staff([
        StaffMember("C1", "Coord One", "care_coordinator", "north", "S1", "C2", email="c1@x.org"),
        StaffMember("C2", "Coord Two", "care_coordinator", "north", "S1", "C1"),
        StaffMember("A1", "Ally", "allied", "north", "S1"),
        StaffMember("S1", "Sup", "supervisor", "north", "PM", email="s1@x.org",
                    webhook_url="https://hooks.x.org/s1"),
        StaffMember("PM", "Manager", "program_manager"),
    ])


async def transitions(db: Database, events: Sequence[AdtEvent]) -> list[EpisodeEvent]:
    """Run ADT events through the transitions processor; the episode events it published."""
    def run(conn: Any) -> list[EpisodeEvent]:
        start = conn.execute(select(outbox.c.id).order_by(outbox.c.id.desc()).limit(1)).scalar() or 0
        process_batch(conn, events, Config(), T0)
        rows = conn.execute(select(outbox.c.payload).where(
            outbox.c.id > start, outbox.c.topic == "transitions.episodes.v1").order_by(outbox.c.id))
        return [EpisodeEvent.model_validate_json(p) for (p,) in rows]
    return await db.write(run)


async def plan(db: Database, events: Sequence[EpisodeEvent]) -> int:
    return await db.write(lambda c: plan_batch(c, events, CTX, T0))


async def stay(db: Database) -> list[EpisodeEvent]:
    return await transitions(db, [
        adt("A01", "a1", patient_class="I", visit="V1", at=ADMITTED, admitted_at=ADMITTED),
        adt("A03", "a2", patient_class="I", visit="V1", at=DISCHARGED, admitted_at=ADMITTED,
            discharged_at=DISCHARGED, disposition="01")])


async def tasks(db: Database) -> list[Any]:
    return await db.run(lambda c: find_tasks(c, limit=1000))


async def test_a_discharge_home_makes_the_community_tasks_with_due_times(database: Database) -> None:
    await setup(database)
    await plan(database, await stay(database))
    made = {t.type: t for t in await tasks(database)}
    assert {"contact_facility", "discharge_planning", "post_discharge_contact",
            "schedule_follow_up_visit", "medication_reconciliation"} <= set(made)
    contact = made["post_discharge_contact"]
    assert contact.clinical_at == DISCHARGED
    assert contact.due_at.astimezone(dt.UTC) == DISCHARGED + timedelta(days=2)  # 2 B: Wednesday
    assert (contact.assignee_id, contact.assignment_reason) == ("C1", "responsible coordinator")
    assert made["discharge_planning"].status == "cancelled"  # voided by the discharge itself


async def test_planning_is_idempotent(database: Database) -> None:
    await setup(database)
    events = await stay(database)
    first = await plan(database, events)
    assert first > 0 and await plan(database, events) == 0
    assert len(await tasks(database)) == len({t.id for t in await tasks(database)})


async def test_notifications_go_to_the_assignee_by_channel(database: Database) -> None:
    await setup(database)
    await plan(database, await stay(database))
    rows = await database.run(lambda c: list(c.execute(select(notifications)).mappings()))
    c1 = {(r["channel"], r["status"]) for r in rows if r["recipient_id"] == "C1"}
    assert c1 == {("inbox", "delivered"), ("email", "pending")}
    body = json.dumps([r["payload"] for r in rows])
    assert "DOE" not in body and "JANE" not in body and "1001" not in body  # no PHI


@pytest.mark.parametrize("c1_email", ["c1@x.org", ""])
async def test_planning_names_the_channels_it_notifies_on_besides_the_inbox(
        database: Database, c1_email: str) -> None:
    """The worker wakes only the dispatcher loops a batch gave work to: the tasks go to C1,
    with an e-mail address or without (then only inbox rows: no channel named)."""
    from dataclasses import replace

    await setup(database)
    await SqlAlchemyDirectory(database, lambda: T0).upsert_staff([StaffMember(
        "C1", "Coord One", "care_coordinator", "north", "S1", "C2", email=c1_email)])
    named: list[set[str]] = []
    ctx = replace(CTX, notified=named.append)
    events = await stay(database)
    await database.write(lambda c: plan_batch(c, events, ctx, T0))
    assert set().union(*named) == ({"email"} if c1_email else set())


async def test_the_ladder_fires_each_step_once_with_a_moved_clock(database: Database) -> None:
    await setup(database)
    await plan(database, await stay(database))
    (contact,) = [t for t in await tasks(database) if t.type == "post_discharge_contact"]
    half = contact.steps[0].at
    await database.write(lambda c: fire_due_steps(c, CTX, half - timedelta(minutes=1)))
    assert [h["action"] for h in await database.run(lambda c: history(c, contact.id))] == [
        "TaskCreated"]
    late = contact.due_at + timedelta(days=3)  # the scheduler was down: catch up
    assert await database.write(lambda c: fire_due_steps(c, CTX, late)) > 0
    assert await database.write(lambda c: fire_due_steps(c, CTX, late)) == 0
    steps = [h["action"] for h in await database.run(lambda c: history(c, contact.id))]
    assert steps == ["TaskCreated", "TaskReminded", "TaskEscalated", "TaskEscalated"]
    (after,) = await database.run(lambda c: load_tasks(c, ids=[contact.id]))
    assert after.escalation_level == 2 and after.next_step_at is None
    to = await database.run(lambda c: sorted(
        r["recipient_id"] for r in c.execute(select(notifications)).mappings()
        if r["task_id"] == contact.id and r["channel"] == "inbox"))
    assert to == ["C1", "C1", "PM", "S1"]  # assigned, reminded, level 1, level 2


async def test_each_ladder_step_fired_in_its_own_sweep_gets_its_own_event_ids(
        database: Database) -> None:
    """Regression: every sweep derived ids from the task alone, so the level-2 escalation
    fired in a later sweep than level 1 reused level 1's event id (consumers that drop
    repeats lost it) and, for the same recipient, its notification ids."""
    await setup(database)
    await plan(database, await stay(database))
    (contact,) = [t for t in await tasks(database) if t.type == "post_discharge_contact"]
    for step in contact.steps:  # the scheduler runs at each step's time (other tasks too)
        assert await database.write(lambda c, at=step.at: fire_due_steps(c, CTX, at)) >= 1

    def task_events(conn: Any) -> list[dict[str, Any]]:
        rows = conn.execute(select(outbox.c.payload).where(outbox.c.topic == "followup.tasks.v1"))
        return [e for e in (json.loads(p) for (p,) in rows) if e["task_id"] == contact.id]

    events = await database.run(task_events)
    assert [e["type"] for e in events] == ["TaskCreated", "TaskReminded", "TaskEscalated",
                                           "TaskEscalated"]
    assert len({e["event_id"] for e in events}) == 4
    notes = await database.run(lambda c: [r for r in c.execute(select(notifications)).mappings()
                                          if r["task_id"] == contact.id])
    assert len({r["id"] for r in notes}) == len(notes)
    assert sorted(r["recipient_id"] for r in notes if r["channel"] == "inbox") == [
        "C1", "C1", "PM", "S1"]
    # Firing a step again (a second scheduler, a retried sweep) still creates nothing twice.
    assert await database.write(lambda c: fire_due_steps(c, CTX, contact.steps[-1].at)) == 0


async def test_two_schedulers_fire_each_step_exactly_once(database: Database,
                                                         database_url: str) -> None:
    """Two processes' schedulers racing over the same due rows, several times over."""
    await setup(database)
    await plan(database, await stay(database))
    other = open_database(database_url)
    late = T0 + timedelta(days=30)
    try:
        await asyncio.gather(*(db.write(lambda c: fire_due_steps(c, CTX, late, limit=2))
                               for _ in range(6) for db in (database, other)))
        await database.write(lambda c: fire_due_steps(c, CTX, late))
    finally:
        await other.dispose()
    rows = await database.run(lambda c: list(c.execute(select(
        task_history.c.task_id, task_history.c.action, task_history.c.detail))))
    fired = [(t, a, (d or {}).get("step")) for t, a, d in rows if a in ("TaskReminded", "TaskEscalated")]
    assert fired and len(fired) == len(set(fired))  # no step fired twice
    active = [t for t in await tasks(database) if t.status in ("open", "claimed")]
    assert all(t.next_step_at is None or t.next_step_at > late for t in active)  # all due fired


async def test_a_cancelled_discharge_cancels_the_discharge_tasks(database: Database) -> None:
    await setup(database)
    await plan(database, await stay(database))
    await plan(database, await transitions(database, [
        adt("A13", "a3", patient_class="I", visit="V1", at=DISCHARGED + timedelta(hours=1))]))
    by_type = {t.type: t for t in await tasks(database)}
    assert by_type["post_discharge_contact"].status == "cancelled"
    assert "EpisodeReopened" in by_type["post_discharge_contact"].cancel_reason


async def test_an_opted_out_member_gets_no_outreach_tasks(database: Database) -> None:
    await setup(database, opted_out=True)
    await plan(database, await stay(database))
    types = {t.type for t in await tasks(database)}
    assert "post_discharge_contact" not in types and "contact_facility" in types


async def test_claim_complete_and_reassign_are_recorded(database: Database) -> None:
    await setup(database)
    await plan(database, await stay(database))
    (contact,) = [t for t in await tasks(database) if t.type == "post_discharge_contact"]
    claimed = await database.write(lambda c: claim_task(c, contact.id, "C1", CTX, T0))
    assert claimed.status == "claimed"
    with pytest.raises(CommandError, match="not reached"):
        await database.write(lambda c: complete_task(c, contact.id, "C1", {"attempts": [
            {"at": "2026-03-03T10:00:00-05:00", "result": "no_answer"}]}, CTX, T0))
    moved = await database.write(lambda c: reassign_task(c, contact.id, "S1", "C2", "cover", CTX, T0))
    assert moved.assignee_id == "C2"
    done = await database.write(lambda c: complete_task(c, contact.id, "C2", {"attempts": [
        {"at": "2026-03-03T10:00:00-05:00", "result": "reached"}]}, CTX, T0))
    assert done.status == "done" and done.next_step_at is None
    actions = [(h["action"], h["actor"]) for h in await database.run(lambda c: history(c, contact.id))]
    assert actions == [("TaskCreated", "system"), ("TaskClaimed", "C1"), ("TaskReassigned", "S1"),
                       ("TaskCompleted", "C2")]


async def test_scheduling_the_visit_creates_the_reminder_and_pins_due_dates(
        database: Database) -> None:
    await setup(database)
    await plan(database, await stay(database))
    by_type = {t.type: t for t in await tasks(database)}
    visit = DISCHARGED + timedelta(days=5)
    await database.write(lambda c: complete_task(
        c, by_type["schedule_follow_up_visit"].id, "C1", {"visit_at": visit.isoformat()}, CTX, T0))
    after = {t.type: t for t in await tasks(database)}
    assert after["appointment_reminder"].due_at.astimezone(dt.UTC) == visit - timedelta(days=1)
    assert after["medication_reconciliation"].due_at.astimezone(dt.UTC) == visit


async def test_an_episode_event_for_an_unknown_episode_plans_nothing(database: Database) -> None:
    """Another deployment's event (same topic, other database) is skipped, not planned."""
    await setup(database)
    events = await stay(database)
    foreign = [e.model_copy(update={"episode_id": "ep-elsewhere", "event_id": "X|" + e.event_id})
               for e in events]
    assert await plan(database, foreign) == 0
    assert await tasks(database) == []


async def _ordered_rows(db: Database) -> dict[str, list[Any]]:
    """Every table's rows in primary-key order, without generated integer ids."""
    def read(conn: Any) -> dict[str, list[Any]]:
        return {t.name: [repr(tuple(r)) for r in conn.execute(
            select(*[c for c in t.c if not (c.name == "id" and c.autoincrement is True)])
            .order_by(*t.primary_key.columns))] for t in metadata.sorted_tables}
    return await db.run(read)


@pytest.mark.parametrize("with_merge", [False, True], ids=["no-merge", "merge"])
async def test_a_batch_plans_what_its_events_plan_one_by_one(database: Database, monkeypatch: Any,
                                                             with_merge: bool) -> None:
    """The batch's tasks are read once and written once (BatchTasks); the database it leaves
    is the one reading and saving the tasks for every episode event leaves. The feed gives
    several members' episodes, cancellations, a readmission flag and, with the merge, a
    folded episode: the events of one batch read what the ones before them changed."""
    import followup.service as service

    await setup(database)
    await SqlAlchemyDirectory(database, lambda: T0).upsert_members(MESSY_MEMBERS)
    events = await transitions(database, messy_batch(with_merge))
    assert "FlagRaised" in {e.type for e in events}  # the readmission: a member-wide read

    def last_ids(conn: Any) -> dict[str, int]:
        return {t.name: conn.execute(select(func.max(t.c.id))).scalar() or 0
                for t in (outbox, episode_timeline)}

    before = await database.run(last_ids)

    def forget(conn: Any) -> None:
        """Everything planning wrote."""
        for name in ("tasks", "task_history", "planned_events", "notifications"):
            conn.execute(metadata.tables[name].delete())
        for t in (outbox, episode_timeline):
            conn.execute(t.delete().where(t.c.id > before[t.name]))

    made = await plan(database, events)
    held = await _ordered_rows(database)
    assert made > 10

    class OneByOne(BatchTasks):
        """What plan_batch did before BatchTasks: every event reads and saves its tasks."""

        @classmethod
        def read(cls, conn: Any, episode_ids: Any, member_ids: Any, now: Any) -> BatchTasks:
            batch = cls(now)
            batch.conn = conn  # type: ignore[attr-defined]
            return batch

        def of(self, episode_ids: Any, member_id: str | None = None) -> list[Any]:
            return load_tasks(self.conn, episode_ids=episode_ids,  # type: ignore[attr-defined]
                              member_id=member_id)

        def save(self, changed: Any) -> None:
            save_tasks(self.conn, list(changed), self.now)  # type: ignore[attr-defined]

    await database.write(forget)
    monkeypatch.setattr(service, "BatchTasks", OneByOne)
    assert await plan(database, events) == made
    assert await _ordered_rows(database) == held
    statuses = {t.status for t in await tasks(database)}
    assert statuses == {"open", "cancelled"}


async def test_the_schedulers_claim_reads_the_pending_steps_index(database: Database) -> None:
    """On PostgreSQL the claim of due ladder steps reads ix_tasks_steps_pending in its own
    order, in the plan kept from an empty table (the index on next_step_at over every task
    lost to the status index there: every active task read and sorted for each claim). On
    SQLite the index applies to the claim (its planner, without statistics, still prefers the
    status index, as before the index existed)."""
    from sqlalchemy import event, text

    from followup.task import ACTIVE
    from followup.task_store import claim_due
    from transcare.db.tables import STEPS_PENDING

    statuses = ", ".join(f"'{s}'" for s in ACTIVE)
    assert f"tasks.status IN ({statuses})" in str(STEPS_PENDING)  # the active ones

    def plan(conn: Any) -> str:
        sent: list[tuple[str, Any]] = []

        def note(*args: Any) -> None:
            sent.append((args[2], args[3]))

        event.listen(conn, "before_cursor_execute", note)
        claim_due(conn, T0, 500)
        event.remove(conn, "before_cursor_execute", note)
        sql, params = sent[0]
        if conn.dialect.name == "sqlite":  # raises "no query solution" where it cannot apply
            forced = sql.replace("FROM tasks", "FROM tasks INDEXED BY ix_tasks_steps_pending", 1)
            assert forced != sql
            return "\n".join(str(r) for r in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {forced}", params))
        conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        conn.exec_driver_sql(f"PREPARE claim AS {sql}")
        lines = [r[0] for r in conn.exec_driver_sql(
            "EXPLAIN EXECUTE claim(now(), 500)")]
        conn.exec_driver_sql("DEALLOCATE claim")
        return "\n".join(lines)

    got = await database.write(plan)
    assert "ix_tasks_steps_pending" in got and "Sort" not in got and "TEMP B-TREE" not in got, got
