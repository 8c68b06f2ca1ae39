"""Patient merges (A40, also A18, A34, A36, A39): MRG-1 prior identifiers into PID-3. Pure.

The episodes of the prior identifiers (or of the roster member who held them) move to the
surviving member. Two episodes that are the same stay at the same facility (overlapping in
time) are combined into the earlier one: its visit numbers, flags and diagnoses are joined, it
takes the course of the two (the higher level of care, the later location, the end), the other
is marked merged into it and its timeline moves over. Nothing is lost or counted
twice. Prior identifiers nobody holds are learned for the survivor, so late messages that
still carry them match.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from transitions.clinical import ClinicalEvent
from transitions.episode import Episode
from transitions.flags import DISCHARGE_FLAGS, discharge_lace
from transitions.state import Outcome, PatientState


def merge(state: PatientState, ev: ClinicalEvent) -> Outcome:
    prior = {str(i) for i in ev.prior_identifiers}
    known = {*state.learned, *state.member.identifiers}
    new = [i for i in dict.fromkeys(ev.prior_identifiers) if i not in known]
    state.learned.extend(new)
    movers = sorted((e for e in state.episodes.values()
                     if not e.merged_into and e.counts
                     and (e.member_id in state.prior_members or e.patient_identifier in prior)),
                    key=lambda e: (_t(e.admitted_at), e.id))
    for moving in movers:
        _move(state, ev, moving)
    if movers or new:
        return "applied"
    return "duplicate" if ev.prior_identifiers else "ignored"  # a replayed merge finds nothing left


def _move(state: PatientState, ev: ClinicalEvent, moving: Episode) -> None:
    """Re-home one episode on the survivor, or fold it into the survivor's copy of the stay."""
    from_member = moving.member_id
    same = _same_stay(state, moving)
    if same is None:
        episode = state.put(replace(moving, member_id=state.member.member_id,
                                    patient_identifier=ev.patient_identifier))
        state.emit("EpisodesMerged", episode, ev.occurred_at, "episode moved to surviving patient",
                   from_member_id=from_member, to_member_id=state.member.member_id,
                   merged_episode_id=None, prior_identifiers=[str(i) for i in ev.prior_identifiers])
        return
    keep, fold = (same, moving) if _t(same.admitted_at) <= _t(moving.admitted_at) else (moving, same)
    kept = state.put(replace(
        keep, member_id=state.member.member_id, patient_identifier=ev.patient_identifier,
        visit_numbers=tuple(dict.fromkeys(keep.visit_numbers + fold.visit_numbers)),
        flags=keep.flags + tuple(f for f in fold.flags if not keep.has_flag(f.name)),
        diagnoses=tuple(dict.fromkeys(keep.diagnoses + fold.diagnoses)),
        **_combined_course(keep, fold)))
    if kept.status == "open":
        kept = state.put(replace(kept, lace=None,
                                 flags=tuple(f for f in kept.flags if f.name not in DISCHARGE_FLAGS)))
    elif kept.status == "discharged" and kept.kind != keep.kind:
        kept = state.put(replace(kept, lace=discharge_lace(state, kept)))
    state.put(replace(fold, status="cancelled", merged_into=kept.id, member_id=kept.member_id,
                      close_reason=f"merged into {kept.id}"))
    keys = {key for key, owner in state.visits.items() if owner == fold.id}
    keys.update((fold.facility_key, number) for number in fold.visit_numbers)
    for key in sorted(keys):
        state.visits[key] = kept.id
        state.new_visits[key] = kept.id
    state.moved_timelines[fold.id] = kept.id
    state.emit("EpisodesMerged", kept, ev.occurred_at, "duplicate stay combined after merge",
               from_member_id=from_member, to_member_id=kept.member_id, merged_episode_id=fold.id,
               prior_identifiers=[str(i) for i in ev.prior_identifiers])


def _combined_course(keep: Episode, fold: Episode) -> dict[str, Any]:
    """The course of one stay known as two episodes: the higher level of care (an ED visit
    that one registration saw become a stay is that stay), the later location, and its end:
    expired if either closed so, open if either is still open, else the later discharge."""
    kind = max(keep.kind, fold.kind, key=lambda k: _LEVEL.get(k, 0))
    later = max((keep, fold), key=lambda e: (_t(e.last_event_at), _t(e.admitted_at)))
    course: dict[str, Any] = {
        "kind": kind, "location": later.location or keep.location,
        "hospital_service": later.hospital_service or keep.hospital_service,
        "kind_history": keep.kind_history + ((keep.kind,) if kind != keep.kind else ()),
        "last_event_at": later.last_event_at or keep.last_event_at}
    ended = [e for e in (keep, fold) if e.status == "closed"] or (
        [] if keep.is_active or fold.is_active else
        [max((keep, fold), key=lambda e: _t(e.discharged_at))])
    if not ended:
        course.update(status="open", discharged_at=None, disposition="", discharged_to="",
                      close_reason="")
    else:
        end = ended[0]
        course.update(status=end.status, discharged_at=end.discharged_at,
                      disposition=end.disposition, discharged_to=end.discharged_to,
                      close_reason=end.close_reason)
    return course


_LEVEL = {"ed": 0, "observation": 1, "inpatient": 2, "post_acute": 2}


def _same_stay(state: PatientState, moving: Episode) -> Episode | None:
    """The survivor's episode for the same stay: same sending facility, overlapping times."""
    for other in state.own_episodes():
        if other.id == moving.id or other.facility_key != moving.facility_key:
            continue
        if _overlap(other, moving):
            return other
    return None


def _overlap(a: Episode, b: Episode) -> bool:
    if a.admitted_at is None or b.admitted_at is None:
        return bool(set(a.visit_numbers) & set(b.visit_numbers))
    a_end = _t(a.discharged_at) if a.discharged_at else float("inf")
    b_end = _t(b.discharged_at) if b.discharged_at else float("inf")
    return _t(a.admitted_at) <= b_end and _t(b.admitted_at) <= a_end


def _t(value: datetime | None) -> float:
    return value.timestamp() if value is not None else float("-inf")
