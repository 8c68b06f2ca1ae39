"""Contract of the roster and staff directory store, on SQLite and PostgreSQL.

Upserts are idempotent, roster identifiers are replaced by an import while merge identifiers
and the raised tier are kept, an identifier held by another member rejects only its row, and
the readers (also usable inside another transaction) return what was written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import insert, select, update

from transcare.db.database import Database
from transcare.db.tables import member_identifiers, members, staff
from transitions.directory import ImportReport, RowError, parse_roster_csv, parse_staff_csv
from transitions.directory_store import (
    SqlAlchemyDirectory,
    load_members,
    load_staff,
    member_ids_by_identifier,
    members_born_on,
)
from transitions.model import Member, MemberIdentifier, StaffMember

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(days=1)
G1001, S77, MCD = (MemberIdentifier("1001", "GENHOSP"), MemberIdentifier("77", "STMARYS"),
                   MemberIdentifier("M998877", "MEDICAID"))


def ident(text: str) -> MemberIdentifier:
    value, _, authority = text.partition("@")
    return MemberIdentifier.of(value, authority)


def member(member_id: str = "P1", *ids: str, **kw: object) -> Member:
    fields: dict[str, object] = dict(family_name="Rivera", given_name="Ana",
                                     birth_date=dt.date(1950, 2, 3), sex="F", tier="medium",
                                     coordinator_id="C1", program="HH")
    fields.update(kw)
    return Member(member_id, identifiers=tuple(ident(i) for i in ids), **fields)  # type: ignore[arg-type]


def directory(db: Database, clock: Callable[[], dt.datetime] = lambda: T0) -> SqlAlchemyDirectory:
    return SqlAlchemyDirectory(db, clock)


async def updated_at(db: Database, member_id: str) -> dt.datetime:
    query = select(members.c.updated_at).where(members.c.member_id == member_id)
    return await db.run(lambda conn: conn.execute(query).scalar_one())


async def test_members_round_trip_and_a_second_import_changes_nothing(database: Database) -> None:
    first = [member("P1", "1001@GENHOSP", "M998877@medicaid", opted_out=True,
                    enrolled_from=dt.date(2025, 1, 1), enrolled_to=dt.date(2026, 12, 31)),
             member("P2", "77@STMARYS", birth_date=None, tier="high")]
    assert await directory(database).upsert_members(first) == ImportReport(inserted=2)
    again = await directory(database, lambda: T1).upsert_members(first)
    assert again == ImportReport(unchanged=2)
    assert await updated_at(database, "P1") == T0
    stored = await directory(database).members(["P1", "P2", "nobody"])
    assert stored == {"P1": first[0], "P2": first[1]}
    assert stored["P1"].identifiers == (G1001, MCD)


async def test_a_changed_row_is_updated_and_only_it_is_touched(database: Database) -> None:
    await directory(database).upsert_members([member("P1"), member("P2")])
    report = await directory(database, lambda: T1).upsert_members(
        [member("P1", phone="555-0100"), member("P2")])
    assert (report.updated, report.unchanged, report.loaded) == (1, 1, 2)
    assert await updated_at(database, "P1") == T1
    assert await updated_at(database, "P2") == T0
    assert (await directory(database).members(["P1"]))["P1"].phone == "555-0100"


async def test_roster_identifiers_are_replaced_and_merge_identifiers_kept(database: Database) -> None:
    await directory(database).upsert_members([member("P1", "1001@GENHOSP", "77@STMARYS")])
    merged = {"value": "OLD9", "authority": "GENHOSP", "member_id": "P1", "source": "merge"}
    await database.run(lambda conn: conn.execute(insert(member_identifiers), [merged]))
    report = await directory(database).upsert_members([member("P1", "77@STMARYS", "M998877@MEDICAID")])
    assert report.updated == 1
    got = (await directory(database).members(["P1"]))["P1"].identifiers
    assert got == (MemberIdentifier("77", "STMARYS"), MCD, MemberIdentifier("OLD9", "GENHOSP"))
    owners = await directory(database).members_by_identifiers([G1001, MemberIdentifier("OLD9", "GENHOSP")])
    assert owners == {MemberIdentifier("OLD9", "GENHOSP"): "P1"}


async def test_an_identifier_of_another_member_rejects_that_row_only(database: Database) -> None:
    await directory(database).upsert_members([member("P1", "1001@GENHOSP")])
    report = await directory(database).upsert_members(
        [member("P3"), member("P2", "1001@genhosp", "77@STMARYS")])
    assert report.errors == (RowError(2, "identifiers: the GENHOSP entry already belongs to member P1"),)
    assert (report.inserted, report.unchanged, report.rejected) == (1, 0, 1)
    assert set(await directory(database).members(["P1", "P2", "P3"])) == {"P1", "P3"}
    assert await directory(database).members_by_identifiers([S77]) == {}


async def test_an_identifier_can_move_between_members_in_one_import(database: Database) -> None:
    await directory(database).upsert_members([member("P1", "1001@GENHOSP"), member("P2")])
    report = await directory(database).upsert_members([member("P1"), member("P2", "1001@GENHOSP")])
    assert (report.updated, report.rejected) == (2, 0)
    assert await directory(database).members_by_identifiers([G1001]) == {G1001: "P2"}


async def test_a_rejected_member_keeps_the_identifier_it_was_giving_up(database: Database) -> None:
    await directory(database).upsert_members([member("P1", "1001@GENHOSP"), member("P3", "77@STMARYS")])
    # P1 gives 1001 to P2 but is itself rejected (it takes P3's identifier): P2 is rejected too.
    report = await directory(database).upsert_members(
        [member("P1", "77@STMARYS"), member("P2", "1001@GENHOSP")])
    assert [e.line for e in report.errors] == [1, 2]
    assert await directory(database).members_by_identifiers([G1001, S77]) == {G1001: "P1", S77: "P3"}


async def test_a_merge_identifier_is_never_taken_by_another_member(database: Database) -> None:
    await directory(database).upsert_members([member("P1")])
    merged = {"value": "1001", "authority": "GENHOSP", "member_id": "P1", "source": "merge"}
    await database.run(lambda conn: conn.execute(insert(member_identifiers), [merged]))
    report = await directory(database).upsert_members([member("P1"), member("P2", "1001@GENHOSP")])
    assert report.errors == (RowError(2, "identifiers: the GENHOSP entry already belongs to member P1"),)


async def test_the_raised_tier_survives_a_reimport(database: Database) -> None:
    await directory(database).upsert_members([member("P1", tier="low")])
    raise_tier = update(members).where(members.c.member_id == "P1").values(raised_tier="high")
    await database.run(lambda conn: conn.execute(raise_tier))
    await directory(database).upsert_members([member("P1", tier="medium")])
    stored = (await directory(database).members(["P1"]))["P1"]
    assert (stored.tier, stored.raised_tier, stored.effective_tier) == ("medium", "high", "high")


async def test_parsed_rows_keep_their_line_numbers_and_errors(database: Database) -> None:
    await directory(database).upsert_members([member("P9", "1001@GENHOSP")])
    parsed = parse_roster_csv("member_id,identifiers,tier\nP1,1001@GENHOSP,low\nP2,,urgent\nP3,,high\n")
    report = await directory(database).upsert_members(parsed)
    assert report.errors == (
        RowError(2, "identifiers: the GENHOSP entry already belongs to member P9"),
        RowError(3, "tier: 'urgent' is not one of high, medium, low"))
    assert report.to_json()["loaded"] == 1


async def test_members_born_on_and_the_connection_level_readers(database: Database) -> None:
    await directory(database).upsert_members([
        member("P1", "1001@GENHOSP"), member("P2", birth_date=dt.date(1960, 7, 8)),
        member("P3", birth_date=dt.date(1950, 2, 3), family_name="Chen"), member("P4", birth_date=None)])
    born = await directory(database).members_born_on([dt.date(1950, 2, 3), dt.date(1999, 1, 1)])
    assert [m.member_id for m in born] == ["P1", "P3"]
    assert born[0].identifiers == (G1001,)

    def inside(conn: object) -> tuple[object, ...]:
        return (load_members(conn, ["P2"]), member_ids_by_identifier(conn, [G1001, S77]),  # type: ignore[arg-type]
                members_born_on(conn, []), load_staff(conn))  # type: ignore[arg-type]

    found, owners, nobody, people = await database.run(inside)
    assert list(found) == ["P2"] and owners == {G1001: "P1"} and nobody == [] and people == []  # type: ignore[call-overload]


async def test_many_members_are_read_in_batches(database: Database) -> None:
    many = [member(f"P{n:04d}", f"{n}@GENHOSP") for n in range(1200)]
    assert (await directory(database).upsert_members(many)).inserted == 1200
    owners = await directory(database).members_by_identifiers(ident(f"{n}@GENHOSP") for n in range(1200))
    assert len(owners) == 1200 and owners[ident("1199@GENHOSP")] == "P1199"
    assert len(await directory(database).members(m.member_id for m in many)) == 1200


STAFF_CSV = """\
staff_id,name,role,team,supervisor_id,backup_id,active,email,webhook_url,away_from,away_to,capacity
S1,Sam Supervisor,supervisor,north,,,true,sam@example.org,,,,
C1,Cora Coordinator,care_coordinator,north,S1,C2,true,cora@example.org,https://hooks.example.org/c1,2026-02-01,2026-02-14,40
C2,Cal Coordinator,care_coordinator,north,S1,C1,false,,,,,25
"""


async def test_staff_round_trip_idempotent_and_updates(database: Database) -> None:
    parsed = parse_staff_csv(STAFF_CSV)
    assert await directory(database).upsert_staff(parsed) == ImportReport(inserted=3)
    assert await directory(database).upsert_staff(parsed) == ImportReport(unchanged=3)
    people = await directory(database).staff_all()
    assert [p.staff_id for p in people] == ["C1", "C2", "S1"]
    c1 = people[0]
    assert (c1.away_from, c1.away_to, c1.capacity, c1.backup_id) == (
        dt.date(2026, 2, 1), dt.date(2026, 2, 14), 40, "C2")
    assert not c1.available_on(dt.date(2026, 2, 3)) and not people[1].active
    report = await directory(database, lambda: T1).upsert_staff(
        [StaffMember("C2", "Cal Coordinator", "care_coordinator", "north", "S1", "C1", True,
                     capacity=25), StaffMember("C2", role="allied")])
    assert (report.updated, report.errors) == (1, (RowError(2, "staff_id: repeats line 1"),))
    query = select(staff.c.staff_id, staff.c.updated_at).order_by(staff.c.staff_id)
    stamps = dict(await database.run(lambda conn: conn.execute(query).all()))  # type: ignore[arg-type]
    assert stamps == {"C1": T0, "C2": T1, "S1": T0}


@pytest.mark.parametrize("rows", [[], ()])
async def test_an_empty_import_is_a_no_op(database: Database, rows: list[Member]) -> None:
    assert await directory(database).upsert_members(rows) == ImportReport()
    assert await directory(database).upsert_staff([]) == ImportReport()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_an_import_gathers_the_planners_statistics(database: Database) -> None:
    """PostgreSQL: the tables an import filled are analysed after it commits, when it
    changed as much as autovacuum waits for (50 rows and a tenth of the table): their row
    counts are known to the planner at once, not at autovacuum's next round (or never)."""
    from sqlalchemy import text

    def counted(conn: object) -> dict[str, float]:
        rows = conn.execute(text(  # type: ignore[attr-defined]
            "SELECT relname, reltuples FROM pg_class "
            "WHERE relname IN ('members', 'member_identifiers')"))
        return {name: float(n) for name, n in rows}

    def people(first: int, count: int) -> list[Member]:
        return [member(f"P{n}", f"M{n}@HOSP", f"X{n}@PLAN") for n in range(first, first + count)]

    await directory(database).upsert_members(people(0, 49))  # fewer than 50: not analysed
    assert await database.run(counted) == {"members": -1, "member_identifiers": -1}
    await directory(database).upsert_members(people(49, 60))
    assert await database.run(counted) == {"members": 109, "member_identifiers": 218}
    await directory(database).upsert_members(people(109, 55))  # 55 < 50 + 10.9: not again
    assert await database.run(counted) == {"members": 109, "member_identifiers": 218}
