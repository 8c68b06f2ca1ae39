"""Parsing roster and staff imports: every column, every kind of bad row with its line number,
file-level problems, and the CSV details (BOM, CRLF, quoted fields, multi-line rows)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest

from transitions.directory import (
    ROSTER_COLUMNS,
    STAFF_COLUMNS,
    ImportFileError,
    ImportReport,
    RowError,
    parse_roster_csv,
    parse_roster_records,
    parse_staff_csv,
    parse_staff_records,
)
from transitions.model import Member, MemberIdentifier, StaffMember

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
ROSTER_HEADER = ",".join(ROSTER_COLUMNS)
STAFF_HEADER = ",".join(STAFF_COLUMNS)


def roster(*rows: str, header: str = ROSTER_HEADER) -> str:
    return "\n".join((header, *rows)) + "\n"


def staff_csv(*rows: str) -> str:
    return "\n".join((STAFF_HEADER, *rows)) + "\n"


def csv_of(rows: list[dict[str, str]]) -> str:
    """CSV text for ``rows`` (header: every key, in first-seen order), as a spreadsheet writes
    it: quoted where needed, CRLF line ends."""
    out = io.StringIO()
    writer = csv.DictWriter(out, list(dict.fromkeys(k for row in rows for k in row)), restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_every_roster_column_is_read_and_identifiers_normalised() -> None:
    text = roster("HH-1, Rivera ,Ana,1950-02-03,f,555-0100,98101, 1001@genhosp ; M99@MEDICAID;"
                  "1001@GENHOSP ,HIGH,C1,Health Home,TRUE,2025-01-01,2026-12-31")
    parsed = parse_roster_csv(text)
    assert parsed.errors == ()
    assert parsed.rows[0].line == 2
    assert parsed.items == [Member(
        "HH-1", "Rivera", "Ana", dt.date(1950, 2, 3), "F", "555-0100", "98101",
        (MemberIdentifier("1001", "GENHOSP"), MemberIdentifier("M99", "MEDICAID")), "high", "C1",
        "Health Home", True, dt.date(2025, 1, 1), dt.date(2026, 12, 31))]


def test_blank_optional_roster_cells_take_the_defaults() -> None:
    parsed = parse_roster_csv(roster("HH-1" + "," * (len(ROSTER_COLUMNS) - 1)))
    assert parsed.items == [Member("HH-1")]
    only_id = parse_roster_csv("member_id\nHH-2\n")
    assert only_id.items == [Member("HH-2", sex="U", tier="low", opted_out=False)]


def test_every_staff_column_is_read() -> None:
    parsed = parse_staff_csv(staff_csv(
        "C1,Ana Alvarez,Care_Coordinator,north,S1,C2,no,ana@example.org,"
        "https://hooks.example.org/c1,2026-03-02,2026-03-13,30"))
    assert parsed.errors == ()
    assert parsed.items == [StaffMember(
        "C1", "Ana Alvarez", "care_coordinator", "north", "S1", "C2", False, "ana@example.org",
        "https://hooks.example.org/c1", dt.date(2026, 3, 2), dt.date(2026, 3, 13), 30)]
    defaults = parse_staff_csv("staff_id,role\nS9,support\n")
    assert defaults.items == [StaffMember("S9", role="support", active=True, capacity=0)]


ROSTER_ERRORS = [
    ("birth_date", "1950-02-30", "birth_date: not a date in YYYY-MM-DD form"),
    ("birth_date", "03/02/1950", "birth_date: not a date in YYYY-MM-DD form"),
    ("birth_date", "19500203", "birth_date: not a date in YYYY-MM-DD form"),
    ("sex", "female", "sex: not one of F, M, O, U"),
    ("tier", "urgent", "tier: 'urgent' is not one of high, medium, low"),
    ("opted_out", "maybe", "opted_out: 'maybe' is not true or false"),
    ("enrolled_from", "2025-13-01", "enrolled_from: not a date in YYYY-MM-DD form"),
    ("identifiers", "1001", "identifiers: entry 1 is not value@authority"),
    ("identifiers", "1001@GENHOSP;@MEDICAID", "identifiers: entry 2 is not value@authority"),
    ("identifiers", "1001@", "identifiers: entry 1 is not value@authority"),
    ("identifiers", "X" * 65 + "@GENHOSP", "identifiers: entry 1 is longer than 64 characters"),
    ("member_id", "", "member_id: required, but blank or missing"),
    ("member_id", "M" * 65, "member_id: longer than 64 characters"),
    ("zip", "98101-12345", "zip: longer than 10 characters"),
    ("family_name", "Rivera\x00", "family_name: contains a control character (a line break or tab?)"),
]


@pytest.mark.parametrize(("column", "value", "reason"), ROSTER_ERRORS,
                         ids=[f"{c}={v[:12]!r}" for c, v, _ in ROSTER_ERRORS])
def test_a_bad_roster_cell_rejects_its_row_only(column: str, value: str, reason: str) -> None:
    good = {name: "" for name in ROSTER_COLUMNS} | {"member_id": "HH-1"}
    bad = good | {"member_id": "HH-2", "program": "HH", column: value}
    parsed = parse_roster_csv(csv_of([good, bad, good | {"member_id": "HH-3"}]))
    assert parsed.errors == (RowError(3, reason),)
    assert [r.line for r in parsed.rows] == [2, 4]
    assert parse_roster_records([good, bad]).errors == (RowError(2, reason),)


STAFF_ERRORS = [
    ("role", "", "role: required, but blank or missing"),
    ("role", "nurse", "role: 'nurse' is not one of care_coordinator, allied, support, supervisor, "
                      "program_manager"),
    ("active", "si", "active: 'si' is not true or false"),
    ("capacity", "-1", "capacity: not a whole number from 0 to 100000"),
    ("capacity", "2.5", "capacity: not a whole number from 0 to 100000"),
    ("capacity", "100001", "capacity: not a whole number from 0 to 100000"),
    ("email", "ana at example.org", "email: not an email address"),
    ("webhook_url", "ftp://x.example.org/", "webhook_url: not an http or https URL"),
    ("away_from", "2026-02-30", "away_from: not a date in YYYY-MM-DD form"),
    ("backup_id", "S2", "backup_id: names the person themself"),
    ("supervisor_id", "S2", "supervisor_id: names the person themself"),
    ("staff_id", " ", "staff_id: required, but blank or missing"),
]


@pytest.mark.parametrize(("column", "value", "reason"), STAFF_ERRORS,
                         ids=[f"{c}={v!r}" for c, v, _ in STAFF_ERRORS])
def test_a_bad_staff_cell_rejects_its_row_only(column: str, value: str, reason: str) -> None:
    good = {"staff_id": "S1", "role": "allied"}
    bad = {"staff_id": "S2", "role": "support", column: value}
    parsed = parse_staff_records([good, bad])
    assert parsed.errors == (RowError(2, reason),)
    assert parsed.items == [StaffMember("S1", role="allied")]
    assert parse_staff_csv(csv_of([good, bad])).errors == (RowError(3, reason),)


@pytest.mark.parametrize(("first", "second", "reason"), [
    (("away_from", "2026-03-13"), ("away_to", "2026-03-02"), "away_to: before away_from"),
    (("enrolled_from", "2026-01-02"), ("enrolled_to", "2026-01-01"), "enrolled_to: before enrolled_from"),
])
def test_a_period_that_ends_before_it_starts_is_rejected(
        first: tuple[str, str], second: tuple[str, str], reason: str) -> None:
    row = {"staff_id": "S1", "member_id": "HH-1", "role": "allied", first[0]: first[1],
           second[0]: second[1]}
    parse = parse_staff_records if first[0].startswith("away") else parse_roster_records
    assert parse([row]).errors == (RowError(1, reason),)  # type: ignore[operator]


def test_several_problems_in_one_row_are_reported_together() -> None:
    parsed = parse_roster_csv(roster("HH-1,,,1950-02-30,X,,,,urgent,,,perhaps,,"))
    assert parsed.errors == (RowError(2, "birth_date: not a date in YYYY-MM-DD form; sex: not "
                                         "one of F, M, O, U; tier: 'urgent' is not one of high, "
                                         "medium, low; opted_out: 'perhaps' is not true or false"),)


def test_reasons_never_echo_names_or_birth_dates() -> None:
    parsed = parse_roster_records([
        {"member_id": "HH-1", "family_name": "Zebulon" * 30, "birth_date": "Zebulon 1950"},
        {"member_id": "HH-2", "given_name": ["Zebulon", "Q"], "sex": "Zebulon"}])
    assert len(parsed.errors) == 2
    assert all("Zebulon" not in e.reason and "1950" not in e.reason for e in parsed.errors)


def test_repeated_ids_and_shared_identifiers_reject_the_later_rows() -> None:
    text = roster("HH-1,,,,,,,1001@GENHOSP,,,,,,", "HH-2,,,,,,,1001@genhosp;77@STMARYS,,,,,,",
                  "HH-1,,,,,,,,,,,,,", "HH-3,,,,,,,,,,,,,")
    parsed = parse_roster_csv(text)
    assert parsed.errors == (
        RowError(3, "identifiers: the GENHOSP entry is also listed for member HH-1 on line 2"),
        RowError(4, "member_id: repeats line 2"))
    assert [m.member_id for m in parsed.items] == ["HH-1", "HH-3"]
    people = parse_staff_csv("staff_id,role\nS1,allied\nS1,support\n")
    assert people.errors == (RowError(3, "staff_id: repeats line 2"),)


def test_bom_crlf_quotes_and_multi_line_rows_keep_their_line_numbers() -> None:
    text = ('\ufeffmember_id,family_name,tier\r\n'
            'HH-1,"O\'Demo, Jr.",high\r\n'
            '\r\n'
            'HH-2,"two\r\nlines",low\r\n'
            'HH-3,"say ""hi""",urgent\r\n')
    parsed = parse_roster_csv(text)
    assert [(r.line, r.value.family_name) for r in parsed.rows] == [(2, "O'Demo, Jr.")]
    assert parsed.errors == (
        RowError(4, "family_name: contains a control character (a line break or tab?)"),
        RowError(6, "tier: 'urgent' is not one of high, medium, low"))


def test_extra_columns_are_ignored_and_header_names_are_forgiving() -> None:
    parsed = parse_roster_csv(" Member ID ,TIER,notes\nHH-1,Medium,anything\n")
    assert parsed.items == [Member("HH-1", tier="medium")]


def test_a_row_with_more_fields_than_the_header_is_rejected() -> None:
    parsed = parse_roster_csv("member_id,family_name\nHH-1,Doe, Jr\nHH-2,Doe\n")
    assert parsed.errors == (RowError(2, "row has 3 fields, the header 2 (unquoted comma?)"),)
    assert parse_roster_csv("member_id,tier\nHH-1\n").items == [Member("HH-1")]


@pytest.mark.parametrize(("parse", "text", "message"), [
    (parse_roster_csv, "family_name,tier\nDoe,low\n", "missing column: member_id"),
    (parse_staff_csv, "name\nAna\n", "missing columns: staff_id, role"),
    (parse_roster_csv, "", "no header row"),
    (parse_roster_csv, "\ufeff\r\n", "no header row"),
    (parse_roster_csv, "member_id,tier,Tier\nHH-1,low,high\n", "column named twice in the header: tier"),
    (parse_roster_csv, 'member_id,tier\nHH-1,"low\n', "line 2: not valid CSV (unexpected end of data)"),
])
def test_file_level_problems_raise(parse: object, text: str, message: str) -> None:
    with pytest.raises(ImportFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)  # type: ignore[operator]


def test_json_values_may_be_strings_numbers_booleans_or_null() -> None:
    parsed = parse_staff_records([{"staff_id": 7, "role": "allied", "active": False,
                                   "capacity": 12.0, "email": None, "away_to": "2026-01-01"}])
    assert parsed.items == [StaffMember("7", role="allied", active=False, capacity=12,
                                        away_to=dt.date(2026, 1, 1))]
    members = parse_roster_records([{"member_id": "HH-1", "opted_out": 1,
                                     "identifiers": ["1001@GENHOSP", "M9@MEDICAID"]}])
    assert members.items[0].opted_out and len(members.items[0].identifiers) == 2
    bad = parse_roster_records([{"member_id": "HH-1", "tier": {"x": 1}}, "HH-2", {}])
    assert bad.errors == (RowError(1, "tier: expected a string, number or boolean"),
                          RowError(2, "not a JSON object"),
                          RowError(3, "member_id: required, but blank or missing"))


def test_json_keys_naming_one_column_twice_and_lists_outside_identifiers_are_row_errors() -> None:
    """A CSV header naming a column twice is refused; a JSON object doing so had one key
    silently win, and a list was joined into any column (a family name "a;b")."""
    bad = parse_roster_records([
        {"member_id": "K-1", "Member ID": "K-2"},
        {"member_id": "K-3", "family_name": ["a", "b"]},
        {"member_id": "K-4", "identifiers": ["1001@GENHOSP", 7]},
        {"member_id": "K-5", "identifiers": ["1005@GENHOSP"], "family_name": "Doe"},
    ])
    assert bad.errors == (RowError(1, "column named twice in the object: member_id"),
                          RowError(2, "family_name: expected a string, number or boolean"),
                          RowError(3, "identifiers: expected a list of strings"))
    assert [m.member_id for m in bad.items] == ["K-5"]


def test_the_example_files_parse_cleanly() -> None:
    members = parse_roster_csv((EXAMPLES / "roster.csv").read_text())
    people = parse_staff_csv((EXAMPLES / "staff.csv").read_text())
    assert (len(members.items), members.errors, len(people.items), people.errors) == (6, (), 9, ())
    authorities = {i.authority for m in members.items for i in m.identifiers}
    assert authorities == {"GENHOSP", "STMARYS", "MEDICAID"}
    roles = {p.role for p in people.items}
    assert roles == {"care_coordinator", "allied", "support", "supervisor", "program_manager"}
    assert any(not p.active for p in people.items)
    assert any(p.away_from for p in people.items)


def test_the_report_merges_errors_by_line_and_serialises() -> None:
    report = ImportReport(2, 1, 3, (RowError(9, "b"),)).with_errors([RowError(4, "a")])
    assert report.to_json() == {"loaded": 6, "inserted": 2, "updated": 1, "unchanged": 3,
                                "rejected": 2, "errors": [{"line": 4, "reason": "a"},
                                                          {"line": 9, "reason": "b"}]}
    assert report.summary("roster") == ("roster: 6 rows loaded (2 new, 1 updated, 3 unchanged), "
                                        "2 rejected")
    assert ImportReport(1, 0, 0).summary("staff") == (
        "staff: 1 row loaded (1 new, 0 updated, 0 unchanged), 0 rejected")
