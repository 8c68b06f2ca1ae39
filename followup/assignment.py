"""Who gets a task (DOMAIN.md sections 4 and 5). Pure.

1. The responsible coordinator of the episode, when their role may do the task.
2. A delegable task, where the program enables delegation, goes to the least-loaded available
   allied or support person of the coordinator's team whose role the rule allows.
3. If the chosen person is away or inactive that day: their backup (if the role fits and they
   are available); else the least-loaded available teammate whose role the rule allows.
4. Nobody eligible: unassigned (the reason says so; escalation reaches the supervisor).

Every result carries the reason, recorded on the task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from transitions.model import StaffMember


@dataclass(frozen=True)
class Assignment:
    staff_id: str
    role: str
    reason: str


class Workload(Mapping[str, int]):
    """Open and claimed tasks per person, read only when an assignment compares people.

    Most tasks go to the episode's coordinator without comparing anyone, so the count (a
    scan of every active task, once per planning batch) is read on first look, not up front;
    tasks assigned before then are added to what is read.

    Arguments:
        read: the counts as stored (``followup.task_store.workload``).
    """

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read = read
        self._counts: Counter[str] | None = None
        self._added: Counter[str] = Counter()

    def add(self, staff_id: str) -> None:
        """One more task for ``staff_id``."""
        (self._added if self._counts is None else self._counts)[staff_id] += 1

    @property
    def read(self) -> bool:
        """Whether the stored counts were read."""
        return self._counts is not None

    def _loaded(self) -> Counter[str]:
        if self._counts is None:
            self._counts = Counter(self._read())
            self._counts.update(self._added)
        return self._counts

    def __getitem__(self, staff_id: str) -> int:
        return self._loaded()[staff_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def assign(roles: Collection[str], delegable_to: Collection[str], coordinator_id: str,
           staff: Mapping[str, StaffMember], load: Mapping[str, int], on: date,
           delegation: bool) -> Assignment:
    """The person for a task whose allowed ``roles`` and ``delegable_to`` come from its rule."""
    coordinator = staff.get(coordinator_id)
    team = coordinator.team if coordinator else ""
    if delegation and delegable_to and team:
        helper = _least_loaded([s for s in staff.values() if s.team == team
                                and s.role in delegable_to and s.available_on(on)], load)
        if helper is not None:
            return Assignment(helper.staff_id, helper.role,
                              f"delegated to {helper.role} in team {team}")
    if coordinator is not None and coordinator.role in roles:
        if coordinator.available_on(on):
            return Assignment(coordinator.staff_id, coordinator.role, "responsible coordinator")
        return _cover(coordinator, roles, staff, load, on)
    return _teammate(team, roles, staff, load, on, "no responsible coordinator")


def _cover(person: StaffMember, roles: Collection[str], staff: Mapping[str, StaffMember],
           load: Mapping[str, int], on: date) -> Assignment:
    why = f"{person.staff_id} {'away' if person.active else 'inactive'}"
    backup = staff.get(person.backup_id)
    if backup is not None and backup.role in roles and backup.available_on(on):
        return Assignment(backup.staff_id, backup.role, f"backup of {why}")
    return _teammate(person.team, roles, staff, load, on, f"{why}, backup unavailable")


def _teammate(team: str, roles: Collection[str], staff: Mapping[str, StaffMember],
              load: Mapping[str, int], on: date, why: str) -> Assignment:
    pool = [s for s in staff.values() if s.role in roles and s.available_on(on)
            and (s.team == team or not team)]
    chosen = _least_loaded(pool, load)
    if chosen is None:
        return Assignment("", "", f"{why}; nobody eligible available")
    return Assignment(chosen.staff_id, chosen.role, f"{why}; least-loaded eligible teammate")


def _least_loaded(pool: list[StaffMember], load: Mapping[str, int]) -> StaffMember | None:
    """Lowest open-task load relative to stated capacity; ties by staff id."""
    def key(s: StaffMember) -> tuple[float, str]:
        n = load.get(s.staff_id, 0)
        return (n / s.capacity if s.capacity > 0 else float(n), s.staff_id)
    return min(pool, key=key) if pool else None
