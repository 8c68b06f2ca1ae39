"""Task assignment (DOMAIN.md sections 4 and 5), table-driven."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from followup.assignment import Assignment, Workload, assign
from transitions.model import StaffMember

DAY = date(2026, 3, 2)
AWAY = {"away_from": date(2026, 3, 1), "away_to": date(2026, 3, 5)}
BASE = {
    "C1": StaffMember("C1", role="care_coordinator", team="n", backup_id="C2", supervisor_id="S"),
    "C2": StaffMember("C2", role="care_coordinator", team="n", backup_id="C1", supervisor_id="S"),
    "C3": StaffMember("C3", role="care_coordinator", team="n", supervisor_id="S", capacity=10),
    "A1": StaffMember("A1", role="allied", team="n"),
    "P1": StaffMember("P1", role="support", team="n"),
    "X1": StaffMember("X1", role="care_coordinator", team="s"),
    "S": StaffMember("S", role="supervisor", team="n"),
}
CC = ("care_coordinator",)
ALL = ("care_coordinator", "allied", "support")


def staff(**changes: dict[str, object]) -> dict[str, StaffMember]:
    out = dict(BASE)
    for staff_id, fields in changes.items():
        out[staff_id] = replace(out[staff_id], **fields)  # type: ignore[arg-type]
    return out


CASES = [
    ("coordinator", CC, (), staff(), {}, False, Assignment("C1", "care_coordinator",
                                                            "responsible coordinator")),
    ("coordinator away: backup", CC, (), staff(C1=AWAY), {},
     False, Assignment("C2", "care_coordinator", "backup of C1 away")),
    ("coordinator inactive: backup", CC, (), staff(C1={"active": False}), {},
     False, Assignment("C2", "care_coordinator", "backup of C1 inactive")),
    ("backup away too: least-loaded teammate", CC, (), staff(C1=AWAY, C2=AWAY), {"C3": 1},
     False, Assignment("C3", "care_coordinator",
                       "C1 away, backup unavailable; least-loaded eligible teammate")),
    ("teammates only in the same team", CC, (), staff(C1=AWAY, C2=AWAY, C3={"active": False}),
     {}, False, Assignment("", "", "C1 away, backup unavailable; nobody eligible available")),
    ("delegation off: coordinator keeps a delegable task", ALL, ("allied", "support"), staff(),
     {}, False, Assignment("C1", "care_coordinator", "responsible coordinator")),
    ("delegation on: least-loaded allied or support", ALL, ("allied", "support"), staff(),
     {"A1": 3, "P1": 1}, True, Assignment("P1", "support", "delegated to support in team n")),
    ("delegation on but helpers away: coordinator", CC + ("allied",), ("allied",),
     staff(A1=AWAY), {}, True, Assignment("C1", "care_coordinator", "responsible coordinator")),
    ("coordinator-only task is never delegated", CC, (), staff(), {}, True,
     Assignment("C1", "care_coordinator", "responsible coordinator")),
    ("unknown coordinator: anyone eligible", CC, (), staff(), {"C1": 5, "C2": 1, "C3": 2, "X1": 9},
     False, Assignment("C3", "care_coordinator",
                       "no responsible coordinator; least-loaded eligible teammate")),
]


@pytest.mark.parametrize(("roles", "delegable", "people", "load", "delegation", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_assignment(roles: tuple[str, ...], delegable: tuple[str, ...],
                    people: dict[str, StaffMember], load: dict[str, int], delegation: bool,
                    expected: Assignment) -> None:
    coordinator = "NOBODY" if "unknown" in expected.reason or "no responsible" in expected.reason \
        else "C1"
    assert assign(roles, delegable, coordinator, people, load, DAY, delegation) == expected


def test_capacity_weighs_load() -> None:
    people = staff(C1=AWAY, C2=AWAY)
    people["C4"] = StaffMember("C4", role="care_coordinator", team="n", capacity=100)
    chosen = assign(CC, (), "C1", people, {"C3": 2, "C4": 10}, DAY, False)
    assert chosen.staff_id == "C4"  # 10/100 beats 2/10


@pytest.mark.parametrize(("roles", "delegable", "people", "load", "delegation", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_stored_workload_is_read_only_when_people_are_compared(
        roles: tuple[str, ...], delegable: tuple[str, ...], people: dict[str, StaffMember],
        load: dict[str, int], delegation: bool, expected: Assignment) -> None:
    reads: list[int] = []

    def read() -> dict[str, int]:
        reads.append(1)
        return load

    workload = Workload(read)
    coordinator = "NOBODY" if "no responsible" in expected.reason else "C1"
    assert assign(roles, delegable, coordinator, people, workload, DAY, delegation) == expected
    compared = "least-loaded" in expected.reason or "delegated" in expected.reason
    assert (len(reads), workload.read) == ((1, True) if compared else (0, False))


def test_a_workload_counts_tasks_assigned_before_and_after_it_was_read() -> None:
    workload = Workload(lambda: {"C1": 2, "C2": 1})
    workload.add("C1")
    workload.add("C3")
    assert not workload.read
    assert (workload["C1"], workload["C2"], workload["C3"], workload.get("C9", 0)) == (3, 1, 1, 0)
    workload.add("C2")
    assert dict(workload) == {"C1": 3, "C2": 2, "C3": 1}
