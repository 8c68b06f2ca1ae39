"""The program's people: enrolled members (the roster) and staff (the directory).

Pure value objects shared by matching, attribution and the episode machine. No I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

Tier = Literal["high", "medium", "low"]
TIERS: tuple[Tier, ...] = ("low", "medium", "high")
Role = Literal["care_coordinator", "allied", "support", "supervisor", "program_manager"]
ROLES: tuple[Role, ...] = ("care_coordinator", "allied", "support", "supervisor", "program_manager")


def normalise_identifier_part(text: str | None) -> str:
    """Identifier values and authorities compare trimmed and case-insensitively."""
    return (text or "").strip().upper()


@dataclass(frozen=True, order=True)
class MemberIdentifier:
    """An identifier as the roster knows it: PID-3 CX-1 with CX-4 (or a plan member id with
    the plan as authority). Both parts are stored normalised (see
    :func:`normalise_identifier_part`)."""

    value: str
    authority: str = ""

    @classmethod
    def of(cls, value: str | None, authority: str | None) -> MemberIdentifier:
        return cls(normalise_identifier_part(value), normalise_identifier_part(authority))

    def __str__(self) -> str:
        return f"{self.value}@{self.authority}" if self.authority else self.value


@dataclass(frozen=True)
class Member:
    """One enrolled patient (a roster row)."""

    member_id: str
    family_name: str = ""
    given_name: str = ""
    birth_date: dt.date | None = None
    sex: str = "U"  # F, M, O, U
    phone: str = ""
    zip: str = ""
    identifiers: tuple[MemberIdentifier, ...] = ()
    tier: Tier = "low"
    coordinator_id: str = ""
    program: str = ""
    opted_out: bool = False
    enrolled_from: dt.date | None = None
    enrolled_to: dt.date | None = None
    raised_tier: Tier | None = None  # set by a readmission or frequent ED use

    def enrolled_on(self, day: dt.date) -> bool:
        """Whether the member is enrolled on ``day`` (open-ended when a bound is missing)."""
        if self.enrolled_from is not None and day < self.enrolled_from:
            return False
        return self.enrolled_to is None or day <= self.enrolled_to

    @property
    def effective_tier(self) -> Tier:
        if self.raised_tier is None:
            return self.tier
        return max(self.tier, self.raised_tier, key=TIERS.index)


@dataclass(frozen=True)
class StaffMember:
    """One person in the staff directory."""

    staff_id: str
    name: str = ""
    role: Role = "care_coordinator"
    team: str = ""
    supervisor_id: str = ""
    backup_id: str = ""
    active: bool = True
    email: str = ""
    webhook_url: str = ""
    away_from: dt.date | None = None
    away_to: dt.date | None = None
    capacity: int = 0  # 0 = no stated limit

    def away_on(self, day: dt.date) -> bool:
        """Inside the away period (both bounds inclusive; a missing bound is open-ended)."""
        if self.away_from is None and self.away_to is None:
            return False
        if self.away_from is not None and day < self.away_from:
            return False
        return self.away_to is None or day <= self.away_to

    def available_on(self, day: dt.date) -> bool:
        return self.active and not self.away_on(day)
