"""Episode events on ``transitions.episodes.v1`` (schema version 1).

Every change the transitions processor makes to an episode is published as one
:class:`EpisodeEvent`: its ``type`` says what happened, ``episode`` is the episode as it stands
after the change, and ``detail`` carries what is particular to the type (see
``docs/episodes.md``). Keyed by the program member id, so one member's events keep their
order. ``event_id`` is deterministic (the ADT event id plus the change's position), so a
consumer can drop a redelivery.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from schemas.adt_event import SCHEMA_VERSION

EpisodeEventType = Literal[
    "EpisodeOpened", "EpisodeUpdated", "PatientTransferred", "PatientDischarged",
    "EpisodeCancelled", "EpisodeReopened", "EpisodesMerged", "EpisodeClosed",
    "CoordinatorAssigned", "FlagRaised",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )


class EpisodeSnapshot(_Frozen):
    """The episode after the change."""

    id: str
    member_id: str  # program member id (roster)
    patient_identifier: str  # VALUE@AUTHORITY the facility knows the patient by (PID-3)
    kind: Literal["ed", "inpatient", "observation", "post_acute"]
    status: Literal["open", "discharged", "closed", "cancelled"]
    facility: str  # PV1-3.4, else MSH-4
    facility_key: str  # MSH-4
    visit_numbers: tuple[str, ...] = ()  # PV1-19
    patient_class: str | None = None  # PV1-2
    location: str | None = None  # PV1-3
    hospital_service: str | None = None  # PV1-10
    admitted_at: AwareDatetime | None = None
    discharged_at: AwareDatetime | None = None
    disposition: str | None = None  # PV1-36 (UB-04 patient status)
    discharged_to: str | None = None  # PV1-37
    diagnoses: tuple[str, ...] = ()  # DG1-3 codes, principal first
    coordinator_id: str | None = None
    coordinator_reason: str | None = None  # roster | backup | caseload_balance | unassigned
    tier: Literal["high", "medium", "low"]
    flags: tuple[str, ...] = ()
    paused: bool = False  # on leave of absence (A21)
    opted_out: bool = False  # the member opted out of outreach
    kind_history: tuple[str, ...] = ()
    lace_total: int | None = None
    close_reason: str | None = None


class EpisodeEvent(_Frozen):
    """One change to one episode."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str  # "{ADT event id}#{n}": deterministic
    type: EpisodeEventType
    member_id: str  # the Kafka key
    episode_id: str
    occurred_at: AwareDatetime | None  # the clinical time of the change
    source_event_id: str  # the ADT event (or sweep) that caused it
    summary: str
    episode: EpisodeSnapshot
    detail: dict[str, Any] = {}
