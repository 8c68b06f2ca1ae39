"""Responsible coordinator (roster, backup, caseload balance, unassigned) and escalation targets."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest

from transitions.attribution import (
    Attribution,
    least_loaded,
    program_managers,
    responsible_coordinator,
    supervisor_of,
)
from transitions.model import Member, StaffMember

DAY = date(2025, 3, 10)
BEFORE, AFTER = DAY - timedelta(days=1), DAY + timedelta(days=1)


def cc(staff_id: str, team: str = "T1", **changes: Any) -> StaffMember:
    """A care coordinator."""
    return StaffMember(staff_id=staff_id, role="care_coordinator", team=team, **changes)


def directory(*people: StaffMember) -> dict[str, StaffMember]:
    return {person.staff_id: person for person in people}


def member(coordinator_id: str = "C1") -> Member:
    return Member(member_id="M1", family_name="DOE", given_name="JANE", coordinator_id=coordinator_id)


# the usual team: C1 (backup B1), B1, C2, C3 in T1; D1 in T2
C1 = cc("C1", backup_id="B1", supervisor_id="S1")
B1, C2, C3, D1 = cc("B1"), cc("C2"), cc("C3"), cc("D1", team="T2")


def away(person: StaffMember) -> StaffMember:
    """``person``, away for ``DAY`` only."""
    return replace(person, away_from=DAY, away_to=DAY)


@pytest.mark.parametrize(
    ("people", "coordinator_id", "caseload", "expected_id", "reason"),
    [
        pytest.param((C1, B1), "C1", {}, "C1", "roster", id="roster-available"),
        pytest.param(
            (replace(C1, away_from=DAY, away_to=AFTER), B1), "C1", {}, "B1", "backup", id="away-first-day"
        ),
        pytest.param(
            (replace(C1, away_from=BEFORE, away_to=DAY), B1), "C1", {}, "B1", "backup", id="away-last-day"
        ),
        pytest.param((replace(C1, away_from=DAY), B1), "C1", {}, "B1", "backup", id="away-open-ended"),
        pytest.param(
            (replace(C1, away_from=BEFORE - timedelta(days=5), away_to=BEFORE), B1),
            "C1",
            {},
            "C1",
            "roster",
            id="back-from-leave",
        ),
        pytest.param((replace(C1, away_from=AFTER), B1), "C1", {}, "C1", "roster", id="leave-not-started"),
        pytest.param((replace(C1, active=False), B1), "C1", {}, "B1", "backup", id="roster-inactive"),
        pytest.param(
            (replace(C1, role="supervisor"), B1), "C1", {}, "B1", "backup", id="roster-not-a-coordinator"
        ),
        pytest.param(
            (away(C1), away(B1), C2, C3, D1),
            "C1",
            {"C2": 5, "C3": 2, "D1": 0},
            "C3",
            "caseload_balance",
            id="backup-away-lowest-teammate",
        ),
        pytest.param(
            (away(C1), replace(B1, active=False), C2, C3),
            "C1",
            {"C2": 1, "C3": 2},
            "C2",
            "caseload_balance",
            id="backup-inactive",
        ),
        pytest.param(
            (away(C1), replace(B1, role="supervisor"), C2),
            "C1",
            {},
            "C2",
            "caseload_balance",
            id="backup-not-a-coordinator",
        ),
        pytest.param(
            (away(C1), C2, C3),
            "C1",
            {},
            "C2",
            "caseload_balance",
            id="backup-unknown",
        ),
        pytest.param(
            (away(C1), away(B1), replace(C2, capacity=10), C3),
            "C1",
            {"C2": 10, "C3": 12},
            "C3",
            "caseload_balance",
            id="at-capacity-skipped",
        ),
        pytest.param(
            (
                away(C1),
                away(B1),
                replace(C2, capacity=20),
                replace(C3, capacity=4),
            ),
            "C1",
            {"C2": 10, "C3": 3},
            "C2",
            "caseload_balance",
            id="load-is-share-of-capacity",
        ),
        pytest.param(
            (
                away(C1),
                away(B1),
                replace(C2, capacity=5),
                replace(C3, capacity=2),
            ),
            "C1",
            {"C2": 6, "C3": 2},
            "C3",
            "caseload_balance",
            id="everyone-at-capacity",
        ),
        pytest.param(
            (away(C1), away(B1), C3, C2),
            "C1",
            {"C2": 3, "C3": 3},
            "C2",
            "caseload_balance",
            id="tie-lowest-id",
        ),
        pytest.param(
            (
                away(C1),
                away(B1),
                C2,
                StaffMember("A1", role="allied", team="T1"),
            ),
            "C1",
            {"C2": 9},
            "C2",
            "caseload_balance",
            id="allied-staff-not-chosen",
        ),
        pytest.param((B1, C2, D1), "X9", {"B1": 3, "C2": 4, "D1": 1}, "D1", "caseload_balance", id="unknown"),
        pytest.param((B1, C2, D1), "", {"B1": 3, "C2": 4, "D1": 1}, "D1", "caseload_balance", id="blank"),
        pytest.param(
            (replace(away(C1), team=""), D1), "C1", {}, "D1", "caseload_balance", id="roster-no-team"
        ),
        pytest.param(
            (away(C1), away(B1), replace(C2, active=False), D1),
            "C1",
            {},
            "",
            "unassigned",
            id="team-unavailable-other-team-not-used",
        ),
        pytest.param((), "C1", {}, "", "unassigned", id="empty-directory"),
    ],
)
def test_responsible_coordinator(
    people: tuple[StaffMember, ...],
    coordinator_id: str,
    caseload: dict[str, int],
    expected_id: str,
    reason: str,
) -> None:
    patient = member(coordinator_id)
    result = responsible_coordinator(patient, directory(*people), caseload, DAY)
    assert (result.staff_id, result.reason) == (expected_id, reason)
    assert result.detail
    assert patient.family_name not in result.detail and patient.member_id not in result.detail


@pytest.mark.parametrize(
    ("people", "coordinator_id", "expected"),
    [
        pytest.param((C1,), "C1", Attribution("C1", "roster", "roster coordinator C1"), id="roster"),
        pytest.param(
            (away(C1), B1),
            "C1",
            Attribution("B1", "backup", "roster coordinator C1 away"),
            id="backup",
        ),
        pytest.param(
            (replace(C1, active=False), away(B1), C2),
            "C1",
            Attribution(
                "C2",
                "caseload_balance",
                "roster coordinator C1 inactive; backup B1 away; least loaded in team T1",
            ),
            id="balance",
        ),
        pytest.param(
            (away(C1), replace(B1, role="allied")),
            "C1",
            Attribution(
                "",
                "unassigned",
                "roster coordinator C1 away; backup B1 not a care coordinator; "
                "no available coordinator in team T1",
            ),
            id="unassigned",
        ),
        pytest.param(
            (),
            "X9",
            Attribution(
                "", "unassigned", "roster coordinator X9 unknown; no available coordinator in any team"
            ),
            id="unknown",
        ),
        pytest.param(
            (D1,),
            "",
            Attribution("D1", "caseload_balance", "no roster coordinator; least loaded in any team"),
            id="blank",
        ),
    ],
)
def test_detail_says_why(people: tuple[StaffMember, ...], coordinator_id: str, expected: Attribution) -> None:
    assert responsible_coordinator(member(coordinator_id), directory(*people), {}, DAY) == expected


def test_least_loaded_of_nobody_is_none() -> None:
    assert least_loaded([], {}) is None


@pytest.mark.parametrize(
    ("people", "staff_id", "expected"),
    [
        pytest.param((C1, StaffMember("S1", role="supervisor")), "C1", "S1", id="known"),
        pytest.param((C1, StaffMember("S1", role="supervisor", active=False)), "C1", "", id="inactive"),
        pytest.param((C1,), "C1", "", id="supervisor-not-in-directory"),
        pytest.param((B1,), "B1", "", id="no-supervisor"),
        pytest.param((C1, StaffMember("S1", role="supervisor")), "X9", "", id="unknown-person"),
    ],
)
def test_supervisor_of(people: tuple[StaffMember, ...], staff_id: str, expected: str) -> None:
    assert supervisor_of(staff_id, directory(*people)) == expected


def test_program_managers_are_active_and_sorted() -> None:
    staff = directory(
        StaffMember("PM2", role="program_manager"),
        StaffMember("PM0", role="program_manager", active=False),
        StaffMember("PM1", role="program_manager", away_from=DAY),
        StaffMember("S1", role="supervisor"),
        C1,
    )
    assert program_managers(staff) == ("PM1", "PM2")
    assert program_managers({}) == ()
