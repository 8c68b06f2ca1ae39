"""The working state the episode machine changes: one member's episodes and the visit index.

The store loads a :class:`PatientState`, the machine applies events to it (no I/O), and the
store writes back what changed: episodes, new visit keys, the changes (timeline and outbox),
a raised tier, identifiers learned from a merge, and timelines to move after a merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from transitions.episode import Change, Episode, EventType
from transitions.model import Member, MemberIdentifier, StaffMember, Tier

Outcome = Literal["applied", "duplicate", "ignored", "conflict"]


@dataclass(frozen=True)
class Rules:
    """Configurable thresholds (settings ``[transitions]``; defaults from DOMAIN.md)."""

    frequent_ed_threshold: int = 4  # the Nth ED visit within the window raises frequent_ed
    frequent_ed_window: timedelta = timedelta(days=365)
    readmission_window: timedelta = timedelta(days=30)
    stale_ed: timedelta = timedelta(hours=48)
    stale_inpatient: timedelta = timedelta(days=30)
    lace_ed_window: timedelta = timedelta(days=183)  # "ED visits in the prior 6 months"
    post_acute_facilities: frozenset[str] = frozenset()


@dataclass
class PatientState:
    """One member's episodes (plus, for a merge, the episodes of the prior identifiers)."""

    member: Member
    episodes: dict[str, Episode]
    visits: dict[tuple[str, str], str]  # (MSH-4, PV1-19) -> episode id
    staff: Mapping[str, StaffMember] = field(default_factory=dict)
    caseload: Mapping[str, int] = field(default_factory=dict)
    rules: Rules = field(default_factory=Rules)
    prior_members: frozenset[str] = frozenset()  # members holding a merge's prior identifiers
    changes: list[Change] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # ids of episodes to write back
    new_visits: dict[tuple[str, str], str] = field(default_factory=dict)
    raised_tier: Tier | None = None
    learned: list[MemberIdentifier] = field(default_factory=list)
    moved_timelines: dict[str, str] = field(default_factory=dict)  # merged id -> survivor id

    def put(self, episode: Episode) -> Episode:
        self.episodes[episode.id] = episode
        self.changed.add(episode.id)
        return episode

    def emit(self, type_: EventType, episode: Episode, at: datetime | None, summary: str,
             **detail: object) -> None:
        self.changes.append(Change(type_, episode.id, at, summary, detail))

    def index_visit(self, facility_key: str, visit_number: str | None, episode_id: str) -> None:
        if visit_number and (facility_key, visit_number) not in self.visits:
            self.visits[(facility_key, visit_number)] = episode_id
            self.new_visits[(facility_key, visit_number)] = episode_id

    def own_episodes(self) -> list[Episode]:
        """This member's episodes that count (not cancelled, not merged away), oldest first."""
        mine = [e for e in self.episodes.values()
                if e.member_id == self.member.member_id and e.counts and not e.merged_into]
        return sorted(mine, key=lambda e: (_time(e.admitted_at), e.id))

    def raise_tier(self, tier: Tier) -> None:
        member = replace(self.member, raised_tier=tier)
        if member.effective_tier != self.member.effective_tier:
            self.member = member
            self.raised_tier = member.raised_tier


def _time(value: datetime | None) -> float:
    return value.timestamp() if value is not None else float("-inf")
