"""What happens to an episode after it opens: transfer, discharge, class change, update,
cancels, leave of absence, death (DOMAIN.md section 1). Pure handlers over a PatientState.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from transitions.attribution import responsible_coordinator
from transitions.clinical import EXPIRED_DISPOSITION, POST_ACUTE_SERVICES, PSYCH_SERVICES, ClinicalEvent, Kind
from transitions.episode import Episode
from transitions.flags import DISCHARGE_FLAGS, discharge_lace, raise_flag
from transitions.opening import open_episode
from transitions.state import Outcome, PatientState

LEFT_AMA = "07"  # PV1-36: left against medical advice


def discharge(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    """A03: discharged at PV1-45 with PV1-36. A discharge for a visit never seen opens the
    episode from the A03 itself (the admission was missed or is late)."""
    if target is None:
        target = open_episode(state, ev, "discharge")
        if target is None:
            return "ignored"
    if target.status == "cancelled":
        return "ignored"
    at = ev.discharged_at or ev.occurred_at
    if ev.discharged_at is None and target.status != "open" and target.discharged_at is not None:
        at = target.discharged_at  # a resend without PV1-45 does not move a known discharge time
    if target.status != "open" and target.discharged_at == at and \
            target.disposition == (ev.disposition or target.disposition):
        return "duplicate"
    episode = _reattribute(state, ev, target)
    disposition = ev.disposition or episode.disposition
    episode = state.put(replace(
        episode, status="discharged" if episode.status != "closed" else "closed",
        paused=False,  # a discharge ends a leave of absence too (its A22 never comes, or is ignored)
        flags=tuple(f for f in episode.flags if f.name != "left_ama" or disposition == LEFT_AMA),
        discharged_at=at, disposition=disposition,
        discharged_to=ev.discharged_to or episode.discharged_to,
        diagnoses=_union(episode.diagnoses, ev.diagnoses), last_event_at=ev.occurred_at))
    episode = state.put(replace(episode, lace=discharge_lace(state, episode)))
    state.emit("PatientDischarged", episode, at, f"discharged from {episode.kind}",
               disposition=episode.disposition, discharged_to=episode.discharged_to,
               kind=episode.kind, corrected=target.status != "open", lace=episode.lace)
    if episode.disposition == LEFT_AMA:
        raise_flag(state, episode, "left_ama", at, disposition=LEFT_AMA)
    return "applied"


def _reattribute(state: PatientState, ev: ClinicalEvent, episode: Episode) -> Episode:
    """At discharge the post-discharge work starts: if the coordinator is away or inactive
    that day, the episode goes to whoever DOMAIN.md section 5 names now."""
    person = state.staff.get(episode.coordinator_id)
    day = (ev.discharged_at or ev.occurred_at).date()
    if person is not None and person.available_on(day):
        return episode
    attribution = responsible_coordinator(state.member, state.staff, state.caseload, day)
    if attribution.staff_id == episode.coordinator_id:
        return episode
    episode = state.put(replace(episode, coordinator_id=attribution.staff_id,
                                coordinator_reason=attribution.reason))
    state.emit("CoordinatorAssigned", episode, ev.occurred_at,
               f"coordinator reassigned ({attribution.reason})", coordinator_id=attribution.staff_id,
               reason=attribution.reason, why=attribution.detail)
    return episode


def transfer(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    """A02: a new location; a change of facility or level of care is marked for the coordinator.
    A transfer of a visit never seen opens the episode (the admission was missed)."""
    if target is None:
        return "applied" if open_episode(state, ev, "transfer") else "ignored"
    if not target.is_active:
        return "ignored"
    level = _level_of_care(target, ev)
    if not ev.location:
        # no PV1-3 (missing PV1 fields): where the patient went is not said; the facility read
        # would be MSH-4's, not a move to another facility
        ev = replace(ev, location=target.location, facility=target.facility)
    moved = ev.location != target.location or ev.facility != target.facility
    if not moved and level is None:
        return "duplicate"
    kind = "post_acute" if level == "post_acute" else target.kind
    episode = state.put(replace(
        target, location=ev.location, facility=ev.facility, kind=kind,
        kind_history=target.kind_history + ((target.kind,) if kind != target.kind else ()),
        location_history=(*target.location_history, target.location),
        transfer_history=(*_aligned(target), (target.facility, target.kind, target.hospital_service)),
        hospital_service=ev.hospital_service or target.hospital_service, last_event_at=ev.occurred_at))
    notify = level is not None or ev.facility != target.facility
    state.emit("PatientTransferred", episode, ev.occurred_at, "patient transferred",
               from_location=target.location, to_location=ev.location, from_facility=target.facility,
               to_facility=ev.facility, level_of_care=level, notify_coordinator=notify)
    return "applied"


def _level_of_care(episode: Episode, ev: ClinicalEvent) -> str | None:
    """"psych" or "post_acute" when an A02 moves the patient into that level of care."""
    new, old = ev.hospital_service, episode.hospital_service
    if new in PSYCH_SERVICES and old not in PSYCH_SERVICES:
        return "psych"
    if (new in POST_ACUTE_SERVICES and old not in POST_ACUTE_SERVICES) or (
            ev.kind == "post_acute" and episode.kind != "post_acute"):
        return "post_acute"
    return None


def class_change(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    """A07 (inpatient to outpatient): reclassify; an outpatient class becomes observation."""
    kind = ev.kind or ("observation" if ev.patient_class == "O" else None)
    if target is None or kind is None or not target.counts:
        return "ignored"
    if kind == target.kind:
        return "duplicate"
    episode = state.put(replace(target, kind=kind, kind_history=(*target.kind_history, target.kind),
                                patient_class=ev.patient_class, last_event_at=ev.occurred_at))
    episode = _relace(state, episode)
    state.emit("EpisodeUpdated", episode, ev.occurred_at, f"reclassified {target.kind} to {kind}",
               kind_from=target.kind, kind_to=kind, trigger=ev.trigger)
    return "applied"


def _relace(state: PatientState, episode: Episode) -> Episode:
    """After a change of kind: a discharged stay's LACE as the new kind has it (none for ED)."""
    if episode.discharged_at is None and episode.lace is None:
        return episode
    return state.put(replace(episode, lace=discharge_lace(state, episode)))


def update(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    """A08: patch the visit fields the message carries; never a new episode."""
    if target is None or not target.counts:
        return "ignored"
    patch = _patch(target, ev)
    if not patch:
        return "duplicate"
    episode = state.put(replace(target, last_event_at=ev.occurred_at, **patch))
    if "discharged_at" in patch or "diagnoses" in patch:
        episode = state.put(replace(episode, lace=discharge_lace(state, episode)))
    state.emit("EpisodeUpdated", episode, ev.occurred_at, "visit updated (A08)",
               fields=sorted(patch), trigger=ev.trigger)
    return "applied"


def _patch(episode: Episode, ev: ClinicalEvent) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "location": ev.location, "hospital_service": ev.hospital_service,
        "admission_type": ev.admission_type, "admitted_at": ev.admitted_at,
        "diagnoses": _union(episode.diagnoses, ev.diagnoses) if ev.diagnoses else None,
    }
    if episode.status != "open":
        fields.update(discharged_at=ev.discharged_at, disposition=ev.disposition,
                      discharged_to=ev.discharged_to)
    return {k: v for k, v in fields.items() if v and v != getattr(episode, k)}


def cancel_admit(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    """A11: cancel the visit. If it cancels the admission of an ED visit that became a stay,
    the ED visit goes on. Before its admission arrives, it leaves a cancelled episode so the
    late admission cannot open one."""
    if target is None:
        return _cancelled_placeholder(state, ev)
    if target.status == "cancelled":
        return "duplicate"
    later_visit = bool(ev.visit_number) and ev.visit_number in target.visit_numbers[1:]
    if later_visit and not target.kind_history:
        # the admission this visit number brought was cancelled already (the visit went back
        # to what it was): a resent A11, not a cancel of the whole visit
        return "duplicate"
    if target.kind_history and later_visit:
        episode = _relace(state, state.put(replace(target, kind=target.kind_history[-1],
                                                   kind_history=target.kind_history[:-1])))
        state.emit("EpisodeUpdated", episode, ev.occurred_at, "admission cancelled; visit goes on",
                   kind_from=target.kind, kind_to=episode.kind, trigger=ev.trigger)
        return "applied"
    episode = state.put(replace(target, status="cancelled", cancelled_at=ev.recorded_at,
                                close_reason="visit cancelled (A11)", last_event_at=ev.occurred_at))
    state.emit("EpisodeCancelled", episode, ev.occurred_at, "visit cancelled (A11)",
               reason="cancel admit/visit (A11)", previous_status=target.status)
    return "applied"


def _cancelled_placeholder(state: PatientState, ev: ClinicalEvent) -> Outcome:
    if not ev.visit_number:
        return "ignored"
    if ev.kind is None and not ev.patient_class:
        ev = replace(ev, kind="inpatient")  # A11 without PV1-2: the late admission sets the kind
    episode = open_episode(state, ev, "cancel")
    if episode is None:
        return "ignored"
    state.changes[:] = [c for c in state.changes if c.episode_id != episode.id]
    episode = state.put(replace(episode, status="cancelled", cancelled_at=ev.recorded_at,
                                close_reason="visit cancelled (A11) before its admission arrived"))
    state.emit("EpisodeCancelled", episode, ev.occurred_at, "visit cancelled before admission seen",
               reason="cancel admit/visit (A11)", previous_status="unseen")
    return "applied"


def cancel_transfer(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    """A12: back to the location before the last recorded transfer (PV1-3 of the A12, else the
    history); ignored when no transfer is on record."""
    if target is None or not target.is_active:
        return "ignored"
    if (target.location_history or target.transfer_cancelled_at is not None) and (
            ev.recorded_at == target.transfer_cancelled_at or _names_where_the_patient_is(target, ev)):
        # a resend of the last A12 (recorded at the same time, or naming where it took the
        # patient), or nothing left to cancel
        return "duplicate"
    if not target.location_history:
        return "ignored"  # no transfer on record to cancel
    back = ev.location or target.location_history[-1]
    before = _aligned(target)
    # the facility, level of care and service before the transfer (episodes recorded before
    # these were kept know only the location)
    facility, kind, service = before[-1] if before else (
        target.facility, target.kind, target.hospital_service)
    if (back, facility, kind, service) == (
            target.location, target.facility, target.kind, target.hospital_service):
        return "duplicate"
    kind_history = target.kind_history[:-1] if kind != target.kind and target.kind_history \
        and target.kind_history[-1] == kind else target.kind_history
    episode = state.put(replace(
        target, location=back, location_history=target.location_history[:-1],
        transfer_history=before[:-1], facility=facility, kind=cast(Kind, kind),
        kind_history=kind_history, hospital_service=service, last_event_at=ev.occurred_at,
        transfer_cancelled_at=ev.recorded_at))
    state.emit("EpisodeUpdated", episode, ev.occurred_at, "transfer cancelled (A12)",
               from_location=target.location, to_location=back, from_facility=target.facility,
               to_facility=facility, from_kind=target.kind, to_kind=kind, transfer_cancelled=True)
    return "applied"


def _names_where_the_patient_is(episode: Episode, ev: ClinicalEvent) -> bool:
    """The A12 names (PV1-3) the current location, and neither another facility (PV1-3.4) nor
    another service (PV1-10): nothing is left for it to cancel. An A12 naming where the last
    transfer came from (a move within one bed: level of care, service, campus) is a cancel."""
    if episode.location_history and ev.location == episode.location_history[-1]:
        return False
    return bool(ev.location) and ev.location == episode.location \
        and ev.location_facility in ("", episode.facility) \
        and ev.hospital_service in ("", episode.hospital_service)


def _aligned(episode: Episode) -> tuple[tuple[str, str, str], ...]:
    """The transfer history entry by entry with the location history (empty where an episode
    was recorded before it was kept)."""
    history = episode.transfer_history
    return history if len(history) == len(episode.location_history) else ()


def cancel_discharge(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    """A13: reopen the episode (not a readmission); discharge-derived flags come off."""
    if target is None or target.status not in ("discharged", "closed"):
        return "ignored" if target is None else "duplicate"
    if ev.died and target.close_reason == "expired":
        return "duplicate"  # an A13 that still says the patient died reopens nothing
    episode = state.put(replace(
        target, status="open", discharged_at=None, disposition="", discharged_to="", lace=None,
        close_reason="", flags=tuple(f for f in target.flags if f.name not in DISCHARGE_FLAGS),
        last_event_at=ev.occurred_at))
    state.emit("EpisodeReopened", episode, ev.occurred_at, "discharge cancelled (A13)",
               reason="cancel discharge (A13)", readmission=False,
               cancelled_discharge_at=target.discharged_at.isoformat() if target.discharged_at else None)
    return "applied"


def pause(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    """A21 leave of absence pauses the episode; A22 return resumes it. No tasks."""
    paused = ev.action == "leave"
    if target is None or not target.is_active:
        return "ignored"
    if target.paused == paused:
        return "duplicate"
    episode = state.put(replace(target, paused=paused, last_event_at=ev.occurred_at))
    state.emit("EpisodeUpdated", episode, ev.occurred_at,
               "leave of absence" if paused else "returned from leave of absence", paused=paused)
    return "applied"


def expire(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> None:
    """Death (PID-30 = Y or PV1-36 = 20): close the message's episode and every open one of the
    member as expired; the coordinator and the supervisor are notified."""
    named = [target] if target is not None and target.counts else []
    target_id = named[0].id if named else ""
    victims = named + [e for e in state.own_episodes() if e.is_active and e.id != target_id]
    for episode in victims:
        if episode.status == "closed" and episode.close_reason == "expired":
            continue
        at = ev.discharged_at or ev.occurred_at
        episode = state.put(replace(episode, status="closed", close_reason="expired",
                                    discharged_at=episode.discharged_at or at,
                                    disposition=episode.disposition or EXPIRED_DISPOSITION))
        state.emit("EpisodeClosed", episode, at, "episode closed: patient expired", reason="expired",
                   notify=["coordinator", "supervisor"])
        raise_flag(state, episode, "expired", at)


def _union(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(new + old)) if new else old
