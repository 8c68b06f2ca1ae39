"""Rule triggers: the facts an episode event gives the rule table, and the filters that match them.

Pure. :func:`facts` turns one :class:`~schemas.episode_event.EpisodeEvent` into zero or more
:class:`Facts` (docs/rules.md, "Triggers"); a :class:`Trigger` matches a fact by its event
name and optional filters, each an "any of" list where an empty list matches everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from schemas.episode_event import EpisodeEvent, EpisodeSnapshot

TriggerEvent = Literal[
    "EpisodeOpened", "Admitted", "PatientDischarged", "PatientTransferred", "FlagRaised",
    "VisitScheduled", "EpisodeClosed",
]
TRIGGER_EVENTS: tuple[str, ...] = get_args(TriggerEvent)
KINDS: tuple[str, ...] = ("ed", "inpatient", "observation", "post_acute")
STAY_KINDS: tuple[str, ...] = ("inpatient", "observation")  # what an "admission" opens
LEVELS_OF_CARE: tuple[str, ...] = ("psych", "post_acute")  # PatientTransferred level_of_care
FLAGS: tuple[str, ...] = ("readmission_30d", "frequent_ed", "stale", "left_ama", "expired")
NO_DISPOSITION = "none"  # a dispositions filter value: the discharge carried no PV1-36


@dataclass(frozen=True)
class Facts:
    """One trigger fact: what happened (``event``) to which episode, and when.

    ``at`` is the clinical time (the anchor "event"; for VisitScheduled the time the visit
    was scheduled), ``visit_at`` the scheduled visit (the anchor "visit").
    """

    event: TriggerEvent
    episode: EpisodeSnapshot
    kind: str  # the episode kind the trigger is about (at discharge: the kind discharged)
    at: datetime | None
    disposition: str | None = None  # PV1-36, two digits
    flag: str | None = None
    level_of_care: str | None = None
    visit_at: datetime | None = None
    event_id: str = ""  # the EpisodeEvent it came from ("" for a scheduled visit)

    @property
    def patient_class(self) -> str:
        return (self.episode.patient_class or "").strip().upper()  # PV1-2

    @property
    def diagnoses(self) -> tuple[str, ...]:
        """DG1-3 codes, principal first, without the dot, upper case."""
        return tuple(normalise_diagnosis(code) for code in self.episode.diagnoses)


def normalise_diagnosis(code: str) -> str:
    """An ICD-10 code as patterns see it: first component only, no dot, upper case."""
    return code.split("^")[0].replace(".", "").strip().upper()


def normalise_disposition(code: str | None) -> str | None:
    """PV1-36 (UB-04 patient status) as two digits ("1" -> "01"); None when empty."""
    text = (code or "").strip()
    if not text:
        return None
    return text.zfill(2) if text.isdigit() and len(text) == 1 else text


def facts(event: EpisodeEvent) -> tuple[Facts, ...]:
    """The trigger facts of one episode event (docs/rules.md, "Triggers").

    EpisodeOpened gives EpisodeOpened, and Admitted for an inpatient or observation episode;
    EpisodeUpdated gives Admitted when an ED (or other) visit becomes an inpatient or
    observation stay; PatientDischarged gives PatientDischarged unless ``detail.corrected``
    (a corrected discharge plans nothing new); FlagRaised, PatientTransferred and EpisodeClosed
    give themselves. Every other type gives nothing.
    """
    snapshot, detail = event.episode, event.detail
    kind = detail["kind"] if detail.get("kind") in KINDS else snapshot.kind  # as of this change
    base: dict[str, Any] = {"episode": snapshot, "kind": kind, "at": event.occurred_at,
                            "event_id": event.event_id,
                            "disposition": normalise_disposition(snapshot.disposition)}
    if event.type == "EpisodeOpened":
        admitted = (Facts("Admitted", **base),) if kind in STAY_KINDS else ()
        return (Facts("EpisodeOpened", **base), *admitted)
    if event.type == "EpisodeUpdated":
        return _admitted_by_update(detail, base)
    if event.type == "PatientDischarged":
        return _discharged(detail, base)
    if event.type == "FlagRaised":
        return (Facts("FlagRaised", flag=detail.get("flag"), **base),)
    if event.type == "PatientTransferred":
        return (Facts("PatientTransferred", level_of_care=detail.get("level_of_care"), **base),)
    if event.type == "EpisodeClosed":
        return (Facts("EpisodeClosed", **base),)
    return ()


def _discharged(detail: dict[str, Any], base: dict[str, Any]) -> tuple[Facts, ...]:
    """A discharge with its PV1-36; nothing for a corrected one (an A03 or A08 after it)."""
    if detail.get("corrected") is True:
        return ()
    disposition = normalise_disposition(detail.get("disposition")) or base["disposition"]
    return (Facts("PatientDischarged", **(base | {"disposition": disposition})),)


def _admitted_by_update(detail: dict[str, Any], base: dict[str, Any]) -> tuple[Facts, ...]:
    """An ED visit that became a stay (kind_from not a stay, kind_to inpatient/observation).
    A reclassification between two stay kinds (A07 inpatient to observation) is no admission."""
    kind_to, kind_from = detail.get("kind_to"), detail.get("kind_from")
    if kind_to in STAY_KINDS and kind_from not in STAY_KINDS:
        return (Facts("Admitted", **(base | {"kind": kind_to})),)
    return ()


def visit_scheduled_facts(snapshot: EpisodeSnapshot, visit_at: datetime,
                          scheduled_at: datetime | None = None) -> Facts:
    """The VisitScheduled fact the planner builds when a scheduling task is completed with
    the visit time. ``scheduled_at`` (when it was scheduled) is the clock start.

    Raises:
        ValueError: ``visit_at`` is naive.
    """
    if visit_at.tzinfo is None or visit_at.utcoffset() is None:
        raise ValueError("visit_at must be an aware datetime")
    return Facts("VisitScheduled", episode=snapshot, kind=snapshot.kind, at=scheduled_at,
                 disposition=normalise_disposition(snapshot.disposition), visit_at=visit_at)


@dataclass(frozen=True)
class Trigger:
    """What a rule fires on: ``event`` plus "any of" filters (empty = any).

    ``diagnosis_patterns`` are matched (``re.match``: anchored at the start, so "F" is every
    F code) against normalised ICD-10 codes: the principal one only unless ``principal_only``
    is false. ``dispositions`` may hold "none" for a discharge without PV1-36.
    """

    event: TriggerEvent
    kinds: tuple[str, ...] = ()
    patient_classes: tuple[str, ...] = ()
    dispositions: tuple[str, ...] = ()
    diagnosis_patterns: tuple[re.Pattern[str], ...] = ()
    principal_only: bool = True
    tiers: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    level_of_care: tuple[str, ...] = ()

    def matches(self, fact: Facts) -> bool:
        """Whether ``fact`` satisfies the event and every filter."""
        return (fact.event == self.event
                and _any_of(self.kinds, fact.kind)
                and _any_of(self.patient_classes, fact.patient_class)
                and _any_of(self.dispositions, fact.disposition or NO_DISPOSITION)
                and _any_of(self.tiers, fact.episode.tier)
                and _any_of(self.flags, fact.flag)
                and _any_of(self.level_of_care, fact.level_of_care)
                and self._diagnosis_matches(fact))

    def _diagnosis_matches(self, fact: Facts) -> bool:
        if not self.diagnosis_patterns:
            return True
        codes = fact.diagnoses[:1] if self.principal_only else fact.diagnoses
        return any(p.match(code) for p in self.diagnosis_patterns for code in codes)


def _any_of(allowed: tuple[str, ...], value: str | None) -> bool:
    return not allowed or value in allowed
