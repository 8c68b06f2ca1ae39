"""The transition episode: its state, its deterministic id, and the changes the machine emits.

Pure value objects. An :class:`Episode` is immutable; the machine returns new ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from transitions.clinical import Kind
from transitions.ids import uuid5_text
from transitions.model import Tier

Status = Literal["open", "discharged", "closed", "cancelled"]
EventType = Literal[
    "EpisodeOpened", "EpisodeUpdated", "PatientTransferred", "PatientDischarged",
    "EpisodeCancelled", "EpisodeReopened", "EpisodesMerged", "EpisodeClosed",
    "CoordinatorAssigned", "FlagRaised",
]
EVENT_TYPES: tuple[EventType, ...] = (
    "EpisodeOpened", "EpisodeUpdated", "PatientTransferred", "PatientDischarged",
    "EpisodeCancelled", "EpisodeReopened", "EpisodesMerged", "EpisodeClosed",
    "CoordinatorAssigned", "FlagRaised",
)
FlagName = Literal["readmission_30d", "frequent_ed", "stale", "left_ama", "expired"]

_NAMESPACE = uuid.UUID("6f1c2a8e-3b7d-4c59-9a0e-2d4b8f1e7c35")
_uuid5 = uuid5_text(_NAMESPACE)


def episode_id(facility_key: str, visit_number: str | None, member_id: str, event_id: str) -> str:
    """Deterministic: the visit (MSH-4 plus PV1-19) where there is one, else the member and
    the ADT event that opened it. A replay derives the same id."""
    basis = f"visit|{facility_key}|{visit_number}" if visit_number else f"event|{member_id}|{event_id}"
    return f"ep-{_uuid5(basis)}"


@dataclass(frozen=True)
class Flag:
    name: FlagName
    raised_at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Episode:
    """One ED visit, inpatient, observation or post-acute stay of one member."""

    id: str
    member_id: str
    patient_identifier: str  # value@authority the facility knows the patient by
    facility_key: str  # MSH-4
    facility: str  # PV1-3.4, else MSH-4
    kind: Kind
    status: Status
    opened_by: str  # the ADT event id that opened it
    visit_numbers: tuple[str, ...] = ()
    patient_class: str = ""
    location: str = ""
    location_history: tuple[str, ...] = ()  # earlier locations, for an A12 revert
    # before each transfer: (facility, kind, hospital_service), beside location_history
    transfer_history: tuple[tuple[str, str, str], ...] = ()
    hospital_service: str = ""
    admission_type: str = ""
    admitted_at: datetime | None = None
    discharged_at: datetime | None = None
    disposition: str = ""
    discharged_to: str = ""
    diagnoses: tuple[str, ...] = ()
    coordinator_id: str = ""
    coordinator_reason: str = ""
    tier: Tier = "low"
    paused: bool = False
    opted_out: bool = False
    flags: tuple[Flag, ...] = ()
    lace: Mapping[str, Any] | None = None
    kind_history: tuple[Kind, ...] = ()  # earlier kinds (an ED visit that became a stay)
    cancelled_at: datetime | None = None  # when an A11 was recorded
    transfer_cancelled_at: datetime | None = None  # when the last A12 was recorded
    close_reason: str = ""
    merged_into: str = ""
    last_event_at: datetime | None = None

    def has_flag(self, name: FlagName) -> bool:
        return any(f.name == name for f in self.flags)

    @property
    def flag_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.flags)

    @property
    def is_active(self) -> bool:
        return self.status == "open"

    @property
    def counts(self) -> bool:
        """Counts as a real visit for history rules (not cancelled, not merged away)."""
        return self.status != "cancelled"


@dataclass(frozen=True)
class Change:
    """One change to an episode: a timeline line and an event on ``transitions.episodes.v1``."""

    type: EventType
    episode_id: str
    occurred_at: datetime | None
    summary: str
    detail: Mapping[str, Any] = field(default_factory=dict)
