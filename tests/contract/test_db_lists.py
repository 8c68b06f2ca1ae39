"""Membership conditions (transcare/db/lists.py) on SQLite and PostgreSQL: the rows they pick
are exactly those listed, for empty, short and long lists, duplicates and values nobody has;
on PostgreSQL one statement text serves every length of list (``= ANY`` of one array, ``IN``
the rows of ``unnest``), so the driver prepares it once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert, select

from followup.task_store import load_tasks
from transcare.db.database import Database
from transcare.db.lists import (
    keys_present,
    one_of,
    one_of_param,
    pair_in,
    pair_in_param,
    pair_params,
)
from transcare.db.tables import member_identifiers, members, outbox, processed_events, tasks
from transitions.episode_store import members_holding
from transitions.model import MemberIdentifier

NOW = datetime(2026, 12, 4, tzinfo=UTC)
ROWS = [{"topic": f"t{n % 3}", "key": f"k{n}", "payload": "{}", "created_at": NOW}
        for n in range(40)]
KEYS = [[], ["k1"], ["k1", "k1", "k7", "nobody"], [f"k{n}" for n in range(0, 700, 2)]]
PAIRS = [[], [("t1", "k1")], [("t1", "k1"), ("t0", "k1"), ("t1", "k1"), ("t2", "k5")],
         [(f"t{n % 3}", f"k{n}") for n in range(0, 700, 3)]]


@pytest.fixture
async def filled(database: Database) -> Database:
    await database.write(lambda c: c.execute(insert(outbox), ROWS))
    return database


def expected_keys(keys: list[str]) -> list[str]:
    return sorted(r["key"] for r in ROWS if r["key"] in keys)


def expected_pairs(pairs: list[tuple[str, str]]) -> list[str]:
    return sorted(r["key"] for r in ROWS if (r["topic"], r["key"]) in pairs)


@pytest.mark.parametrize("keys", KEYS, ids=lambda k: f"{len(k)} values")
async def test_one_of_picks_the_listed_rows(filled: Database, keys: list[str]) -> None:
    got = await filled.run(lambda c: sorted(c.execute(
        select(outbox.c.key).where(one_of(c, outbox.c.key, keys))).scalars()))
    assert got == expected_keys(keys)


@pytest.mark.parametrize("pairs", PAIRS, ids=lambda p: f"{len(p)} pairs")
async def test_pair_in_picks_the_listed_rows(filled: Database,
                                             pairs: list[tuple[str, str]]) -> None:
    got = await filled.run(lambda c: sorted(c.execute(select(outbox.c.key).where(
        pair_in(c, outbox.c.topic, outbox.c.key, pairs))).scalars()))
    assert got == expected_pairs(pairs)


async def test_a_statement_built_once_takes_any_length(filled: Database) -> None:
    def run(conn: Connection) -> list[list[str]]:
        dialect = conn.dialect.name
        query = select(outbox.c.key).where(
            one_of_param(dialect, outbox.c.key, "keys"),
            pair_in_param(dialect, outbox.c.topic, outbox.c.key, "pairs"))
        return [sorted(conn.execute(query, {"keys": keys, **pair_params(dialect, "pairs", pairs)})
                       .scalars()) for keys in KEYS[1:] for pairs in PAIRS[1:]]

    got = await filled.run(run)
    assert got == [sorted(set(expected_keys(keys)) & set(expected_pairs(pairs)))
                   for keys in KEYS[1:] for pairs in PAIRS[1:]]


async def test_postgresql_runs_one_statement_whatever_the_length(filled: Database) -> None:
    def texts(conn: Connection) -> tuple[str, set[str]]:
        seen: set[str] = set()

        def record(*args: Any) -> None:
            seen.add(args[2])  # (conn, cursor, statement, parameters, context, executemany)

        event.listen(conn, "before_cursor_execute", record)
        try:
            for keys, pairs in zip(KEYS[1:], PAIRS[1:], strict=True):
                conn.execute(select(outbox.c.key).where(
                    one_of(conn, outbox.c.key, keys),
                    pair_in(conn, outbox.c.topic, outbox.c.key, pairs))).all()
        finally:
            event.remove(conn, "before_cursor_execute", record)
        return conn.dialect.name, seen

    dialect, seen = await filled.run(texts)
    # SQLite renders a parameter a value (a statement a length; compiled in-process).
    assert len(seen) == (1 if dialect == "postgresql" else len(KEYS) - 1)


async def test_a_value_longer_than_the_column_matches_nothing(filled: Database) -> None:
    topic = "t" * 80  # outbox.topic is VARCHAR(80), outbox.key VARCHAR(250)
    key = "k" * 250
    await filled.write(lambda c: c.execute(insert(outbox), [
        {"topic": topic, "key": key, "payload": "{}", "created_at": NOW}]))

    def run(conn: Connection) -> list[list[str]]:
        dialect = conn.dialect.name
        longer = [(topic + "-not-this-one", key), (topic, key + "-not-this-one")]
        built = select(outbox.c.key).where(
            one_of_param(dialect, outbox.c.topic, "topics"),
            pair_in_param(dialect, outbox.c.topic, outbox.c.key, "pairs"))
        return [
            list(conn.execute(select(outbox.c.key).where(
                one_of(conn, outbox.c.topic, [topic + "-not-this-one"]))).scalars()),
            list(conn.execute(select(outbox.c.key).where(
                pair_in(conn, outbox.c.topic, outbox.c.key, longer))).scalars()),
            list(conn.execute(built, {"topics": [topic + "x"],
                                      **pair_params(dialect, "pairs", [(topic, key)])}).scalars()),
            list(conn.execute(built, {"topics": [topic],
                                      **pair_params(dialect, "pairs", longer)}).scalars()),
            list(conn.execute(select(outbox.c.key).where(
                pair_in(conn, outbox.c.topic, outbox.c.key, [(topic, key)]))).scalars()),
        ]

    assert await filled.run(run) == [[], [], [], [], [key]]


async def test_a_task_id_longer_than_the_column_finds_no_task(database: Database) -> None:
    """GET /api/tasks/{id} and the claim, complete and reassign commands read tasks by id: an
    id with the real one as its first 40 characters is another (unknown) task."""
    task_id = "t" * 40  # tasks.id is VARCHAR(40)

    def run(conn: Connection) -> tuple[list[str], list[str]]:
        conn.execute(insert(tasks).values(
            id=task_id, episode_id="e1", member_id="m1", rule_id="r",
            type="post_discharge_contact", status="open", clinical_at=NOW, due_at=NOW,
            detail={}, created_at=NOW, updated_at=NOW))
        return ([t.id for t in load_tasks(conn, ids=[task_id + "-not-this-one"])],
                [t.id for t in load_tasks(conn, ids=[task_id])])

    assert await database.write(run) == ([], [task_id])


async def test_a_longer_prior_identifier_is_nobodys(database: Database) -> None:
    """A merge's prior identifier longer than the column is not the identifier it starts with."""
    held = "A" * 64  # member_identifiers.value is VARCHAR(64)

    def run(conn: Connection) -> tuple[set[str], set[str]]:
        conn.execute(insert(members).values(member_id="M1", updated_at=NOW))
        conn.execute(insert(member_identifiers).values(value=held, authority="H", member_id="M1",
                                                       source="roster"))
        return (members_holding(conn, [MemberIdentifier(held + "X", "H")]),
                members_holding(conn, [MemberIdentifier(held, "H")]))

    assert await database.write(run) == (set(), {"M1"})


@pytest.mark.parametrize("keys", KEYS, ids=lambda k: f"{len(k)} values")
async def test_keys_present_are_the_listed_keys_held(filled: Database, keys: list[str]) -> None:
    got = await filled.run(lambda c: keys_present(c, outbox.c.key, keys))
    assert got == set(expected_keys(keys))
    # ... among the rows that meet the conditions
    got = await filled.run(lambda c: keys_present(c, outbox.c.key, keys, outbox.c.topic != "t1"))
    assert got == {r["key"] for r in ROWS if r["key"] in keys and r["topic"] != "t1"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_keys_present_plans_one_index_probe_a_key_on_an_empty_table(
        database: Database) -> None:
    """PostgreSQL keeps a prepared statement's generic plan once it has one. Made while the
    table is empty (how the worker starts), ``= ANY`` of the list gets a whole-table read that
    it then keeps as the table grows; the lookup's generic plan probes the index instead."""
    from sqlalchemy import text

    pe = processed_events.c

    def generic_plan(conn: Connection) -> str:
        sent: list[str] = []

        def record(*args: Any) -> None:
            sent.append(args[2])

        event.listen(conn, "before_cursor_execute", record)
        keys_present(conn, pe.event_id, ["e1", "e2"], pe.outcome != "failed")
        event.remove(conn, "before_cursor_execute", record)
        conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        conn.exec_driver_sql(f"PREPARE lookup AS {sent[0]}")
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(
            "EXPLAIN EXECUTE lookup('{e1,e2}', 'failed')"))
        conn.exec_driver_sql("DEALLOCATE lookup")
        return plan

    plan = await database.write(generic_plan)
    assert "Seq Scan on processed_events" not in plan and "Index Scan" in plan, plan
