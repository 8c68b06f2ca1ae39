"""Roster and staff directory imports: CSV text or JSON objects to Members and StaffMembers.

Pure: no I/O. Columns are those of docs/roster-and-staff.md. A row that cannot be read becomes a
:class:`RowError` naming its line and the column; good rows still load. Reasons never repeat a
person's name, birth date or contact details, only the column and what is wrong with it.

Line numbers: for CSV, the physical line where the row starts (the header is line 1); for JSON,
the 1-based position of the object in the list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit

from transitions.import_rows import ImportFileError, Record, Row, csv_records, json_records
from transitions.model import ROLES, Member, MemberIdentifier, Role, StaffMember, Tier

__all__ = [
    "ImportFileError", "ImportReport", "Numbered", "Parsed", "RowError", "parse_roster_csv",
    "parse_roster_records", "parse_staff_csv", "parse_staff_records", "unique_members",
    "unique_staff",
]

T = TypeVar("T")

ROSTER_COLUMNS = ("member_id", "family_name", "given_name", "birth_date", "sex", "phone", "zip",
                  "identifiers", "tier", "coordinator_id", "program", "opted_out",
                  "enrolled_from", "enrolled_to")
STAFF_COLUMNS = ("staff_id", "name", "role", "team", "supervisor_id", "backup_id", "active",
                 "email", "webhook_url", "away_from", "away_to", "capacity")
ROSTER_REQUIRED = ("member_id",)
STAFF_REQUIRED = ("staff_id", "role")
SEXES = ("F", "M", "O", "U")  # HL7 table 0001, as the roster uses it
_TIER_NAMES = ("high", "medium", "low")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NAME_LEN = 120  # family_name, given_name in transcare.db.tables


@dataclass(frozen=True)
class RowError:
    """A rejected row: its line (see the module docstring) and why, naming the column."""

    line: int
    reason: str


@dataclass(frozen=True)
class Numbered(Generic[T]):
    """A parsed row with the line it came from."""

    line: int
    value: T


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """The good rows of an import, in file order, and the rejected ones."""

    rows: tuple[Numbered[T], ...]
    errors: tuple[RowError, ...] = ()

    @property
    def items(self) -> list[T]:
        return [row.value for row in self.rows]


@dataclass(frozen=True)
class ImportReport:
    """What an import did: rows new, changed and identical to what was stored, and errors.

    ``loaded`` counts every accepted row (new, updated or unchanged); ``rejected`` the errors
    (one per rejected row), sorted by line.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: tuple[RowError, ...] = ()

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged

    @property
    def rejected(self) -> int:
        return len(self.errors)

    def with_errors(self, errors: Iterable[RowError]) -> ImportReport:
        """This report with more rejected rows (for example the parser's), sorted by line."""
        merged = tuple(sorted((*self.errors, *errors), key=lambda e: e.line))
        return ImportReport(self.inserted, self.updated, self.unchanged, merged)

    def summary(self, what: str) -> str:
        """One line, for example ``roster: 6 rows loaded (2 new, 1 updated, 3 unchanged), 1
        rejected``."""
        rows = "row" if self.loaded == 1 else "rows"
        return (f"{what}: {self.loaded} {rows} loaded ({self.inserted} new, {self.updated} "
                f"updated, {self.unchanged} unchanged), {self.rejected} rejected")

    def to_json(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "rejected": self.rejected,
                "errors": [{"line": e.line, "reason": e.reason} for e in self.errors]}


# --- Roster and staff --------------------------------------------------------------------------


def _member(row: Row) -> Member:
    enrolled_from, enrolled_to = row.period("enrolled_from", "enrolled_to")
    return Member(
        member_id=row.text("member_id", required=True),
        family_name=row.text("family_name", _NAME_LEN), given_name=row.text("given_name", _NAME_LEN),
        birth_date=row.date("birth_date"), sex=row.choice("sex", SEXES, "U", echo=False),
        phone=row.text("phone", 40), zip=row.text("zip", 10),
        identifiers=row.identifiers("identifiers"),
        tier=cast(Tier, row.choice("tier", _TIER_NAMES, "low")),
        coordinator_id=row.text("coordinator_id"), program=row.text("program", 80),
        opted_out=row.flag("opted_out", False),
        enrolled_from=enrolled_from, enrolled_to=enrolled_to,
    )


def _staff_member(row: Row) -> StaffMember:
    away_from, away_to = row.period("away_from", "away_to")
    role = row.choice("role", ROLES, "", required=True)
    person = StaffMember(
        staff_id=row.text("staff_id", required=True), name=row.text("name", 160),
        role=cast(Role, role or "care_coordinator"), team=row.text("team", 80),
        supervisor_id=row.text("supervisor_id"), backup_id=row.text("backup_id"),
        active=row.flag("active", True), email=row.text("email", 254),
        webhook_url=row.text("webhook_url", 500), away_from=away_from, away_to=away_to,
        capacity=row.count("capacity"),
    )
    _check_contacts(row, person)
    return person


def _check_contacts(row: Row, person: StaffMember) -> None:
    if person.email and not _EMAIL.fullmatch(person.email):
        row.fail("email", "not an email address")
    url = urlsplit(person.webhook_url)
    if person.webhook_url and not (url.scheme in ("http", "https") and url.netloc):
        row.fail("webhook_url", "not an http or https URL")
    for column in ("backup_id", "supervisor_id"):
        if person.staff_id and getattr(person, column) == person.staff_id:
            row.fail(column, "names the person themself")


def _parse(records: Iterable[Record], build: Callable[[Row], T]) -> Parsed[T]:
    rows: list[Numbered[T]] = []
    errors: list[RowError] = []
    for line, cells, problem in records:
        row = Row(cells)
        value = build(row) if problem is None else None
        if problem or row.problems:
            errors.append(RowError(line, problem or "; ".join(row.problems)))
        elif value is not None:
            rows.append(Numbered(line, value))
    return Parsed(tuple(rows), tuple(errors))


def unique_members(rows: Iterable[Numbered[Member]]) -> Parsed[Member]:
    """Keep the first row of each member id and of each identifier; later rows that repeat a
    member id, or list an identifier an earlier row gave another member, are rejected."""
    kept: list[Numbered[Member]] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    owners: dict[MemberIdentifier, tuple[str, int]] = {}
    for row in rows:
        m = row.value
        taken = [(i, owners[i]) for i in m.identifiers
                 if owners.get(i, (m.member_id, 0))[0] != m.member_id]
        if m.member_id in seen:
            errors.append(RowError(row.line, f"member_id: repeats line {seen[m.member_id]}"))
        elif taken:
            i, (owner, line) = taken[0]
            errors.append(RowError(row.line, f"identifiers: the {i.authority} entry is also "
                                             f"listed for member {owner} on line {line}"))
        else:
            seen[m.member_id] = row.line
            owners.update({i: (m.member_id, row.line) for i in m.identifiers})
            kept.append(row)
    return Parsed(tuple(kept), tuple(errors))


def unique_staff(rows: Iterable[Numbered[StaffMember]]) -> Parsed[StaffMember]:
    """Keep the first row of each staff id; later repeats are rejected."""
    kept: list[Numbered[StaffMember]] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for row in rows:
        if row.value.staff_id in seen:
            errors.append(RowError(row.line, f"staff_id: repeats line {seen[row.value.staff_id]}"))
        else:
            seen[row.value.staff_id] = row.line
            kept.append(row)
    return Parsed(tuple(kept), tuple(errors))


def _finish(parsed: Parsed[T], unique: Callable[[Iterable[Numbered[T]]], Parsed[T]]) -> Parsed[T]:
    checked = unique(parsed.rows)
    errors = sorted((*parsed.errors, *checked.errors), key=lambda e: e.line)
    return Parsed(checked.rows, tuple(errors))


def parse_roster_csv(text: str) -> Parsed[Member]:
    """Roster rows from CSV text. Raises :class:`ImportFileError` for a file-level problem."""
    return _finish(_parse(csv_records(text, ROSTER_REQUIRED), _member), unique_members)


def parse_roster_records(objects: Sequence[object]) -> Parsed[Member]:
    """Roster rows from a list of JSON objects (line = position in the list, from 1)."""
    return _finish(_parse(json_records(objects), _member), unique_members)


def parse_staff_csv(text: str) -> Parsed[StaffMember]:
    """Staff rows from CSV text. Raises :class:`ImportFileError` for a file-level problem."""
    return _finish(_parse(csv_records(text, STAFF_REQUIRED), _staff_member), unique_staff)


def parse_staff_records(objects: Sequence[object]) -> Parsed[StaffMember]:
    """Staff rows from a list of JSON objects (line = position in the list, from 1)."""
    return _finish(_parse(json_records(objects), _staff_member), unique_staff)
