"""Who is responsible for a member on a given day (DOMAIN.md section 5, rules 1-2).

The roster's coordinator when available; else that coordinator's named backup; else the
least-loaded available care coordinator of the same team. Also the people a follow-up escalates
to (supervisor, program managers). Pure functions over the staff directory, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Literal

from transitions.model import Member, StaffMember

AttributionReason = Literal["roster", "backup", "caseload_balance", "unassigned"]


@dataclass(frozen=True)
class Attribution:
    """The responsible coordinator (``staff_id`` is "" when unassigned) and why.

    ``detail`` is short and carries staff and team ids only, never patient data.
    """

    staff_id: str
    reason: AttributionReason
    detail: str


def _is_available_coordinator(person: StaffMember | None, on: date) -> bool:
    return person is not None and person.role == "care_coordinator" and person.available_on(on)


def _why_not(label: str, staff_id: str, person: StaffMember | None) -> str:
    """Why an unavailable person cannot take the member, e.g. "roster coordinator C1 away"."""
    if not staff_id:
        return f"no {label}"
    if person is None:
        return f"{label} {staff_id} unknown"
    if person.role != "care_coordinator":
        return f"{label} {staff_id} not a care coordinator"
    return f"{label} {staff_id} {'away' if person.active else 'inactive'}"


def _load(person: StaffMember, caseload: Mapping[str, int]) -> Fraction:
    cases = caseload.get(person.staff_id, 0)
    return Fraction(cases, person.capacity) if person.capacity > 0 else Fraction(cases)


def _has_room(person: StaffMember, caseload: Mapping[str, int]) -> bool:
    return person.capacity <= 0 or caseload.get(person.staff_id, 0) < person.capacity


def least_loaded(candidates: Sequence[StaffMember], caseload: Mapping[str, int]) -> StaffMember | None:
    """The candidate with the lowest load (cases / capacity, or cases when no capacity is stated).

    People at or over a stated capacity are passed over unless everyone is; ties go to the lowest
    staff_id. None when there are no candidates.
    """
    with_room = [person for person in candidates if _has_room(person, caseload)]
    pool = with_room or candidates
    if not pool:
        return None
    return min(pool, key=lambda person: (_load(person, caseload), person.staff_id))


def _balance(
    team: str | None,
    staff: Mapping[str, StaffMember],
    caseload: Mapping[str, int],
    on: date,
    why: str,
) -> Attribution:
    """Least-loaded available care coordinator of ``team`` (every team when None)."""
    candidates = [
        person
        for person in staff.values()
        if _is_available_coordinator(person, on) and (team is None or person.team == team)
    ]
    where = f"team {team}" if team is not None else "any team"
    chosen = least_loaded(candidates, caseload)
    if chosen is None:
        return Attribution("", "unassigned", f"{why}; no available coordinator in {where}")
    return Attribution(chosen.staff_id, "caseload_balance", f"{why}; least loaded in {where}")


def responsible_coordinator(
    member: Member, staff: Mapping[str, StaffMember], caseload: Mapping[str, int], on: date
) -> Attribution:
    """The care coordinator responsible for ``member`` on ``on``.

    1. The roster's coordinator (``member.coordinator_id``) when a care coordinator available on
       that day ("roster").
    2. Else that coordinator's ``backup_id`` when a care coordinator available that day ("backup").
    3. Else the least-loaded available care coordinator of the roster coordinator's team; of
       every team when the roster coordinator is unknown or has no team ("caseload_balance").
    4. Else nobody: ``staff_id`` "" ("unassigned").

    Args:
        caseload: open cases per staff_id (missing means none).
    """
    coordinator_id = member.coordinator_id
    coordinator = staff.get(coordinator_id) if coordinator_id else None
    if _is_available_coordinator(coordinator, on):
        return Attribution(coordinator_id, "roster", f"roster coordinator {coordinator_id}")
    why = _why_not("roster coordinator", coordinator_id, coordinator)
    if coordinator is None:
        return _balance(None, staff, caseload, on, why)
    backup_id = coordinator.backup_id
    backup = staff.get(backup_id) if backup_id else None
    if _is_available_coordinator(backup, on):
        return Attribution(backup_id, "backup", why)
    if backup_id:
        why += "; " + _why_not("backup", backup_id, backup)
    return _balance(coordinator.team or None, staff, caseload, on, why)


def supervisor_of(staff_id: str, staff: Mapping[str, StaffMember]) -> str:
    """The supervisor's staff_id; "" when the person or the supervisor is not in the directory
    or the supervisor is inactive (the escalation then goes to :func:`program_managers`)."""
    person = staff.get(staff_id)
    supervisor = staff.get(person.supervisor_id) if person and person.supervisor_id else None
    return supervisor.staff_id if supervisor is not None and supervisor.active else ""


def program_managers(staff: Mapping[str, StaffMember]) -> tuple[str, ...]:
    """The staff_ids of active program managers, sorted."""
    return tuple(sorted(p.staff_id for p in staff.values() if p.role == "program_manager" and p.active))
