"""The roster and staff directory in the database (SQLAlchemy Core, SQLite and PostgreSQL).

Every query is a plain function of a sync ``Connection`` (``load_members``, ``load_staff``,
``member_ids_by_identifier``, ``members_born_on``, ``write_members``, ``write_staff``) so the
episode processor can call them inside its own transaction; :class:`SqlAlchemyDirectory` runs
each in a transaction of its own through the :class:`~transcare.db.database.Database`.

Imports are idempotent upserts: a row identical to the stored one is not written (its
``updated_at`` stays), a member's roster identifiers are replaced by the import, identifiers
learned from a merge and the ``raised_tier`` are kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Table, delete, select
from sqlalchemy.engine import Connection, RowMapping

from transcare.db import tables
from transcare.db.database import Database
from transcare.db.lists import one_of, pair_in
from transcare.db.statistics import refresh_statistics
from transcare.db.tables import member_identifiers, members, staff
from transcare.db.upsert import dialect_insert, insert_all, upsert
from transitions.directory import (
    ImportReport,
    Numbered,
    Parsed,
    RowError,
    unique_members,
    unique_staff,
)
from transitions.model import TIERS, Member, MemberIdentifier, Role, StaffMember, Tier

T = TypeVar("T")
# member_identifiers.source: the roster import's, or learned (from a merge's prior identifiers,
# or from a match reviewer's decision). A roster import never drops a learned identifier; it
# takes one a reviewer taught (the member's row confirming it, or another member's row), never
# one a merge taught.
ROSTER, MERGE, REVIEW = "roster", "merge", "review"
_CHUNK = 500  # values per IN (...) list
_MEMBER_COLUMNS = ("member_id", "family_name", "given_name", "birth_date", "sex", "phone", "zip",
                   "tier", "coordinator_id", "program", "opted_out", "enrolled_from", "enrolled_to")
_STAFF_COLUMNS = ("staff_id", "name", "role", "team", "supervisor_id", "backup_id", "active",
                  "email", "webhook_url", "away_from", "away_to", "capacity")
_Owners = dict[MemberIdentifier, tuple[str, str]]  # identifier -> (member_id, source)


class Directory(Protocol):
    """The port: import the roster and the staff directory, and read them back."""

    async def upsert_members(self, members: Sequence[Member] | Parsed[Member]) -> ImportReport: ...
    async def upsert_staff(self, staff: Sequence[StaffMember] | Parsed[StaffMember]
                           ) -> ImportReport: ...
    async def members_by_identifiers(self, ids: Iterable[MemberIdentifier]
                                     ) -> dict[MemberIdentifier, str]: ...
    async def members(self, member_ids: Iterable[str]) -> dict[str, Member]: ...
    async def members_born_on(self, dates: Iterable[dt.date]) -> list[Member]: ...
    async def staff_all(self) -> list[StaffMember]: ...


class SqlAlchemyDirectory:
    """:class:`Directory` on a migrated database; each call is one transaction.

    Arguments:
        db: the database (schema at migration 0002 or later).
        clock: the time written to ``updated_at`` of new and changed rows.
    """

    def __init__(self, db: Database, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._db = db
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    async def upsert_members(self, members: Sequence[Member] | Parsed[Member]) -> ImportReport:
        """Insert or update members. Given a :class:`Parsed`, its line numbers are used and its
        errors are part of the report; given plain members, line = position from 1."""
        rows, errors = _numbered(members)
        now = self._clock()
        report = await self._db.run(lambda conn: write_members(conn, rows, now))
        await refresh_statistics(self._db, report.inserted + report.updated, tables.members,
                                 tables.member_identifiers)
        return report.with_errors(errors)

    async def upsert_staff(self, staff: Sequence[StaffMember] | Parsed[StaffMember]
                           ) -> ImportReport:
        """Insert or update staff; lines and errors as for :meth:`upsert_members`."""
        rows, errors = _numbered(staff)
        now = self._clock()
        report = await self._db.run(lambda conn: write_staff(conn, rows, now))
        return report.with_errors(errors)

    async def members_by_identifiers(self, ids: Iterable[MemberIdentifier]
                                     ) -> dict[MemberIdentifier, str]:
        wanted = list(ids)
        return await self._db.run(lambda conn: member_ids_by_identifier(conn, wanted))

    async def members(self, member_ids: Iterable[str]) -> dict[str, Member]:
        wanted = list(member_ids)
        return await self._db.run(lambda conn: load_members(conn, wanted))

    async def members_born_on(self, dates: Iterable[dt.date]) -> list[Member]:
        wanted = list(dates)
        return await self._db.run(lambda conn: members_born_on(conn, wanted))

    async def staff_all(self) -> list[StaffMember]:
        return await self._db.run(load_staff)


def _numbered(items: Sequence[T] | Parsed[T]) -> tuple[tuple[Numbered[T], ...], tuple[RowError, ...]]:
    if isinstance(items, Parsed):
        return items.rows, items.errors
    return tuple(Numbered(n, item) for n, item in enumerate(items, 1)), ()


def _chunks(values: Iterable[T]) -> Iterator[list[T]]:
    batch = list(dict.fromkeys(values))
    for start in range(0, len(batch), _CHUNK):
        yield batch[start:start + _CHUNK]


# --- Reading -----------------------------------------------------------------------------------


def identifier_owners(conn: Connection, ids: Iterable[MemberIdentifier]) -> _Owners:
    """Who holds each of ``ids`` (normalised, see ``MemberIdentifier.of``), and from which
    source (``roster``, ``merge`` or ``review``); identifiers nobody holds are absent."""
    c = member_identifiers.c
    owners: _Owners = {}
    for batch in _chunks(ids):
        pairs = [(i.value, i.authority) for i in batch]
        query = select(c.value, c.authority, c.member_id, c.source).where(
            pair_in(conn, c.value, c.authority, pairs))
        for value, authority, member_id, source in conn.execute(query):
            owners[MemberIdentifier(value, authority)] = (member_id, source)
    return owners


def member_ids_by_identifier(conn: Connection,
                             ids: Iterable[MemberIdentifier]) -> dict[MemberIdentifier, str]:
    """The member holding each identifier (normalised, from ``MemberIdentifier.of``)."""
    return {ident: owner for ident, (owner, _) in identifier_owners(conn, ids).items()}


def learn_identifiers(conn: Connection, member_id: str, learned: Iterable[MemberIdentifier],
                      source: str) -> None:
    """Identifiers nobody holds become ``member_id``'s (``source``: merge or review); those
    someone holds stay theirs. One without an assigning authority is not learned: a bare
    number names nobody outside the facility that sent it."""
    wanted = [i for i in dict.fromkeys(learned) if i.value and i.authority]
    if not wanted:
        return
    held = identifier_owners(conn, wanted)
    rows = [{"value": i.value, "authority": i.authority, "member_id": member_id, "source": source}
            for i in wanted if i not in held]
    if rows:
        # one another transaction learned meanwhile stays that transaction's
        conn.execute(dialect_insert(conn, member_identifiers).on_conflict_do_nothing(
            index_elements=["value", "authority"]), rows)


def identifiers_with_sources(conn: Connection, member_id: str) -> list[tuple[MemberIdentifier, str]]:
    """The member's identifiers with their source (``roster``, ``merge``, ``review``), by
    authority then value."""
    c = member_identifiers.c
    query = select(c.value, c.authority, c.source).where(c.member_id == member_id)
    found = [(MemberIdentifier(value, authority), source)
             for value, authority, source in conn.execute(query)]
    return sorted(found, key=lambda f: (f[0].authority, f[0].value))


def drop_identifier(conn: Connection, member_id: str, ident: MemberIdentifier, source: str) -> bool:
    """Drop ``ident`` from ``member_id`` if the member holds it from ``source``; whether it did."""
    c = member_identifiers.c
    result = conn.execute(delete(member_identifiers).where(
        c.value == ident.value, c.authority == ident.authority, c.member_id == member_id,
        c.source == source))
    return bool(result.rowcount)


def load_members(conn: Connection, member_ids: Iterable[str]) -> dict[str, Member]:
    """Members by id, with all their identifiers (sorted); unknown ids are absent."""
    found: dict[str, Member] = {}
    for batch in _chunks(member_ids):
        rows = conn.execute(select(members).where(one_of(conn, members.c.member_id, batch))).mappings()
        found.update(_members(conn, list(rows)))
    return found


def members_born_on(conn: Connection, dates: Iterable[dt.date]) -> list[Member]:
    """Members whose birth date is one of ``dates`` (demographic matching), by member id."""
    found: list[Member] = []
    for batch in _chunks(dates):
        query = select(members).where(one_of(conn, members.c.birth_date, batch))
        found.extend(_members(conn, list(conn.execute(query).mappings())).values())
    return sorted(found, key=lambda m: m.member_id)


def load_staff(conn: Connection) -> list[StaffMember]:
    """The whole staff directory, by staff id."""
    rows = conn.execute(select(staff).order_by(staff.c.staff_id)).mappings()
    return [_staff_member(row) for row in rows]


def _members(conn: Connection, rows: Sequence[RowMapping]) -> dict[str, Member]:
    ids = _identifiers(conn, [row["member_id"] for row in rows])
    return {row["member_id"]: _member(row, tuple(sorted(ids.get(row["member_id"], ()))))
            for row in rows}


def _identifiers(conn: Connection, member_ids: Sequence[str],
                 *sources: str) -> dict[str, set[MemberIdentifier]]:
    """Identifiers by member, from ``sources`` (default: all)."""
    c = member_identifiers.c
    found: dict[str, set[MemberIdentifier]] = {}
    for batch in _chunks(member_ids):
        conds = [one_of(conn, c.member_id, batch), *([c.source.in_(sources)] if sources else [])]
        query = select(c.member_id, c.value, c.authority).where(*conds)
        for member_id, value, authority in conn.execute(query):
            found.setdefault(member_id, set()).add(MemberIdentifier(value, authority))
    return found


def _member(row: RowMapping, identifiers: tuple[MemberIdentifier, ...]) -> Member:
    fields = {name: row[name] for name in _MEMBER_COLUMNS}
    return Member(**{**fields, "tier": _tier(row["tier"]) or "low"},
                  identifiers=identifiers, raised_tier=_tier(row["raised_tier"]))


def _tier(value: str | None) -> Tier | None:
    return next((tier for tier in TIERS if tier == value), None)


def _staff_member(row: RowMapping) -> StaffMember:
    fields = {name: row[name] for name in _STAFF_COLUMNS}
    return StaffMember(**{**fields, "role": cast(Role, row["role"])})


# --- Writing -----------------------------------------------------------------------------------


def write_members(conn: Connection, rows: Sequence[Numbered[Member]],
                  now: dt.datetime) -> ImportReport:
    """Upsert members and replace their roster identifiers, in the caller's transaction.

    A row is rejected (and the others still written) when it repeats an earlier row's member
    id or identifier, or lists an identifier the database gives another member, unless that
    member is in this import and no longer lists it (identifiers can move between members).
    """
    checked = unique_members(rows)
    owners = identifier_owners(conn, (i for r in checked.rows for i in r.value.identifiers))
    accepted, conflicts = _without_conflicts(checked.rows, owners)
    wanted = {m.member_id: _values(m, _MEMBER_COLUMNS) for m in accepted}
    current = _current(conn, members, "member_id", _MEMBER_COLUMNS, list(wanted))
    held = _identifiers(conn, list(wanted), ROSTER)
    # identifiers a merge taught the member stay the merge's, listed or not; one a reviewer
    # taught it becomes a roster identifier when its row lists it (the program confirms it)
    listed = {m.member_id: {i for i in m.identifiers if owners.get(i) != (m.member_id, MERGE)}
              for m in accepted}
    changed = [k for k in wanted if current.get(k) != wanted[k] or held.get(k, set()) != listed[k]]
    upsert(conn, members, ["member_id"], [{**wanted[k], "updated_at": now} for k in changed])
    _replace_identifiers(conn, {k: (held.get(k, set()), listed[k]) for k in changed})
    return _report(changed, current, len(wanted), (*checked.errors, *conflicts))


def write_staff(conn: Connection, rows: Sequence[Numbered[StaffMember]],
                now: dt.datetime) -> ImportReport:
    """Upsert staff, in the caller's transaction; a repeated staff id is rejected."""
    checked = unique_staff(rows)
    wanted = {r.value.staff_id: _values(r.value, _STAFF_COLUMNS) for r in checked.rows}
    current = _current(conn, staff, "staff_id", _STAFF_COLUMNS, list(wanted))
    changed = [k for k in wanted if current.get(k) != wanted[k]]
    upsert(conn, staff, ["staff_id"], [{**wanted[k], "updated_at": now} for k in changed])
    return _report(changed, current, len(wanted), checked.errors)


def _report(changed: Sequence[str], current: dict[str, Any], total: int,
            errors: Iterable[RowError]) -> ImportReport:
    inserted = sum(1 for k in changed if k not in current)
    return ImportReport(inserted, len(changed) - inserted, total - len(changed)).with_errors(errors)


def _without_conflicts(rows: Sequence[Numbered[Member]],
                       owners: _Owners) -> tuple[list[Member], list[RowError]]:
    """Reject rows listing another member's identifier; repeat until stable, since a
    rejected member keeps the identifiers it was giving up."""
    rejected: dict[int, RowError] = {}
    while True:
        importing = {r.value.member_id for r in rows if r.line not in rejected}
        new = {r.line: RowError(r.line, reason) for r in rows if r.line not in rejected
               for reason in [_conflict(r.value, owners, importing)] if reason}
        if not new:
            return [r.value for r in rows if r.line not in rejected], list(rejected.values())
        rejected.update(new)


def _conflict(member: Member, owners: _Owners, importing: set[str]) -> str | None:
    for ident in member.identifiers:
        owner, source = owners.get(ident, (member.member_id, ROSTER))
        if owner != member.member_id and (source == MERGE or (source == ROSTER and owner not in importing)):
            return f"identifiers: the {ident.authority} entry already belongs to member {owner}"
    return None


def _values(item: Member | StaffMember, columns: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(item, name) for name in columns}


def _current(conn: Connection, table: Table, key: str, columns: Sequence[str],
             keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for batch in _chunks(keys):
        query = select(*(table.c[name] for name in columns)).where(one_of(conn, table.c[key], batch))
        found.update({row[key]: dict(row) for row in conn.execute(query).mappings()})
    return found


def _replace_identifiers(conn: Connection,
                         changes: dict[str, tuple[set[MemberIdentifier], set[MemberIdentifier]]]
                         ) -> None:
    """Delete every dropped roster identifier first, then insert the new ones, so an
    identifier can move from one member to another within one import."""
    c = member_identifiers.c
    dropped = [(i.value, i.authority) for held, listed in changes.values() for i in held - listed]
    for batch in _chunks(dropped):
        conn.execute(delete(member_identifiers).where(
            pair_in(conn, c.value, c.authority, batch), c.source == ROSTER))
    # the roster is the program's word: it takes an identifier a reviewer taught (the member
    # itself, confirming it, or another member)
    taken = [(i.value, i.authority) for held, listed in changes.values() for i in listed - held]
    for batch in _chunks(taken):
        conn.execute(delete(member_identifiers).where(
            pair_in(conn, c.value, c.authority, batch), c.source == REVIEW))
    added = [{"value": i.value, "authority": i.authority, "member_id": member_id,
              "source": ROSTER}
             for member_id, (held, listed) in changes.items() for i in sorted(listed - held)]
    if added:
        insert_all(conn, member_identifiers, added)
