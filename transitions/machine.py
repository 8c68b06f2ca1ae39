"""The episode state machine (DOMAIN.md section 1). Pure: it changes a :class:`PatientState`.

:func:`apply` takes one :class:`ClinicalEvent` of an enrolled member and returns the outcome:

- ``applied``: something changed (episodes, changes on ``state.changes``);
- ``duplicate``: the event restates what is known (a resend with a new MSH-10);
- ``ignored``: the event concerns no episode (A05, an outpatient A04, an A08 or A12 for an
  unknown visit, ...);
- ``conflict``: the visit number belongs to another member's episode (goes to match review).

What it does with messy feeds is documented in ``docs/episodes.md`` and table-tested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from transitions.clinical import ClinicalEvent
from transitions.episode import Episode
from transitions.lifecycle import (
    cancel_admit,
    cancel_discharge,
    cancel_transfer,
    class_change,
    discharge,
    expire,
    pause,
    transfer,
    update,
)
from transitions.merge import merge
from transitions.opening import admit
from transitions.state import Outcome, PatientState


def apply(state: PatientState, ev: ClinicalEvent) -> Outcome:
    """Apply one event to the member's episodes. Never raises on incomplete data."""
    if ev.action == "merge":
        return merge(state, ev)
    target = find_target(state, ev)
    if target is not None and target.member_id != state.member.member_id:
        return "conflict"
    if target is not None and ev.visit_number and \
            state.visits.get((ev.facility_key, ev.visit_number)) != target.id:
        target = _adopt_visit(state, target, ev.facility_key, ev.visit_number)
    before = len(state.changes)
    outcome = _HANDLERS.get(ev.action, _ignore)(state, ev, target)
    if ev.died:
        # the episode as the handler left it, or the one it opened (an A03 for an unseen visit)
        expire(state, ev, state.episodes.get(target.id) if target else find_target(state, ev))
    if outcome != "applied" and len(state.changes) > before:
        return "applied"
    return outcome


def find_target(state: PatientState, ev: ClinicalEvent) -> Episode | None:
    """The episode an event is about: by visit key (MSH-4 plus PV1-19); without a visit
    number, the member's latest episode at the same sending facility (open ones first; for an
    admission, not one discharged before it; for an A03, an A11 or a death, the one it ended
    when it is a resend); with an unknown visit number, an open episode at that facility that
    has no visit number yet."""
    if ev.visit_number:
        found = state.visits.get((ev.facility_key, ev.visit_number))
        if found is not None and found in state.episodes:
            return state.episodes[found]
    here = [e for e in state.own_episodes() if e.facility_key == ev.facility_key]
    if ev.visit_number:
        here = [e for e in here if not e.visit_numbers and e.is_active]
    elif ev.action == "open":
        # a registration after the last visit there ended is a new visit, not a resend
        here = [e for e in here
                if e.is_active or e.discharged_at is None or ev.occurred_at <= e.discharged_at]
    if not ev.visit_number and (ev.died or ev.action in ("discharge", "cancel_admit")):
        # a resend finds the visit it ended, not the next one still open
        here = _ended_by(state, ev) or here
    if not here:
        return None
    return max(here, key=lambda e: (e.is_active, e.admitted_at is not None,
                                    e.admitted_at.timestamp() if e.admitted_at else 0.0))


def _ended_by(state: PatientState, ev: ClinicalEvent) -> list[Episode]:
    """The member's episodes at the event's facility that an event without a visit number
    already ended: an A03 (by its discharge time), a death (by its time) or an A11 (by its
    recorded time)."""
    mine = [e for e in state.episodes.values() if e.member_id == state.member.member_id
            and not e.merged_into and e.facility_key == ev.facility_key]
    if ev.action != "cancel_admit":
        at = ev.discharged_at or ev.occurred_at
        ended = ("closed",) if ev.died else ("discharged", "closed")
        return [e for e in mine if e.status in ended and e.discharged_at == at and _same_stay(e, ev)]
    return [e for e in mine if e.status == "cancelled" and e.cancelled_at == ev.recorded_at
            and _same_stay(e, ev)]


def _same_stay(episode: Episode, ev: ClinicalEvent) -> bool:
    """The message's PV1-44, when it has one, is the episode's admission time (two visits
    ended at one time, an end-of-shift discharge run, are told apart by it)."""
    return ev.admitted_at is None or episode.admitted_at is None or ev.admitted_at == episode.admitted_at


def _adopt_visit(state: PatientState, target: Episode, facility_key: str,
                 visit_number: str) -> Episode:
    """An open episode without a visit number that an event with one is about (the feed
    filled PV1-19 late) takes the number: the next event of that visit, a resend too, finds it
    by its key instead of opening a second episode."""
    state.index_visit(facility_key, visit_number, target.id)
    if visit_number in target.visit_numbers:
        return target
    return state.put(replace(target, visit_numbers=(*target.visit_numbers, visit_number)))


def _preadmit(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    return "ignored"  # A05: a note in the message store only; no episode (DOMAIN.md section 1)


def _ignore(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    return "ignored"


Handler = Callable[[PatientState, ClinicalEvent, Episode | None], Outcome]
_HANDLERS: dict[str, Handler] = {
    "open": admit, "preadmit": _preadmit, "transfer": transfer, "discharge": discharge,
    "class_change": class_change, "update": update, "cancel_admit": cancel_admit,
    "cancel_transfer": cancel_transfer, "cancel_discharge": cancel_discharge,
    "leave": pause, "return": pause,
}


__all__ = ["Outcome", "apply", "find_target"]
