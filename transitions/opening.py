"""Opening episodes: ED registration, admission, observation (A01, A04, A06), and the same
transition continuing when an ED visit becomes an admission at the same facility. Pure.
"""

from __future__ import annotations

from dataclasses import replace

from transitions.attribution import responsible_coordinator
from transitions.clinical import ClinicalEvent
from transitions.episode import Episode, episode_id
from transitions.flags import DISCHARGE_FLAGS, discharge_lace, history_flags
from transitions.state import Outcome, PatientState

ADMITTED_AS_INPATIENT = "09"  # PV1-36 (UB-04 patient status): admitted as an inpatient to this hospital


def open_episode(state: PatientState, ev: ClinicalEvent, via: str) -> Episode | None:
    """Open a new episode for ``ev`` (kind from its class), attributed and flagged.

    Opened from a discharge (``via`` "discharge") the admission time is PV1-44 or unknown,
    never the discharge time; a cancelled placeholder (``via`` "cancel") earns no flags.
    """
    if ev.kind is None:
        return None
    member = state.member
    attribution = responsible_coordinator(member, state.staff, state.caseload, ev.occurred_at.date())
    admitted = ev.admitted_at or (None if via == "discharge" else ev.occurred_at)
    at = admitted or ev.occurred_at
    episode = state.put(Episode(
        id=episode_id(ev.facility_key, ev.visit_number, member.member_id, ev.event_id),
        member_id=member.member_id, patient_identifier=ev.patient_identifier,
        facility_key=ev.facility_key, facility=ev.facility, kind=ev.kind, status="open",
        opened_by=ev.event_id, visit_numbers=(ev.visit_number,) if ev.visit_number else (),
        patient_class=ev.patient_class, location=ev.location, hospital_service=ev.hospital_service,
        admission_type=ev.admission_type, admitted_at=admitted, diagnoses=ev.diagnoses,
        coordinator_id=attribution.staff_id, coordinator_reason=attribution.reason,
        tier=member.effective_tier, opted_out=member.opted_out, last_event_at=ev.occurred_at,
    ))
    state.index_visit(ev.facility_key, ev.visit_number, episode.id)
    state.emit("EpisodeOpened", episode, at, f"{episode.kind} episode opened ({ev.trigger})",
               kind=episode.kind, trigger=ev.trigger, via=via, facility=episode.facility)
    state.emit("CoordinatorAssigned", episode, at,
               f"coordinator assigned ({attribution.reason})", coordinator_id=attribution.staff_id,
               reason=attribution.reason, why=attribution.detail)
    return episode if via == "cancel" else history_flags(state, episode)


def admit(state: PatientState, ev: ClinicalEvent, target: Episode | None) -> Outcome:
    if ev.kind is None:
        return "ignored"
    if target is not None:
        return _admit_existing(state, ev, target)
    ed = _convertible(state, ev)
    if ed is not None:
        return _convert(state, ev, ed)
    return "applied" if open_episode(state, ev, "admission") else "ignored"


def _convertible(state: PatientState, ev: ClinicalEvent) -> Episode | None:
    """An open ED (or observation) episode at the same facility that this admission continues."""
    if ev.kind not in ("inpatient", "observation", "post_acute"):
        return None
    lower = ("ed",) if ev.kind == "observation" else ("ed", "observation")
    here = [e for e in state.own_episodes()
            if e.is_active and e.facility_key == ev.facility_key and e.kind in lower]
    return here[-1] if here else None


def _convert(state: PatientState, ev: ClinicalEvent, episode: Episode) -> Outcome:
    assert ev.kind is not None
    numbers = episode.visit_numbers + ((ev.visit_number,) if ev.visit_number
                                       and ev.visit_number not in episode.visit_numbers else ())
    episode = state.put(replace(
        episode, kind=ev.kind, kind_history=(*episode.kind_history, episode.kind),
        # an ED visit known only from its discharge (A03 first) begins with this admission
        admitted_at=episode.admitted_at or ev.admitted_at or ev.occurred_at,
        visit_numbers=numbers, patient_class=ev.patient_class, location=ev.location or episode.location,
        hospital_service=ev.hospital_service or episode.hospital_service,
        admission_type=ev.admission_type or episode.admission_type, last_event_at=ev.occurred_at))
    state.index_visit(ev.facility_key, ev.visit_number, episode.id)
    state.emit("EpisodeUpdated", episode, ev.occurred_at,
               f"{episode.kind_history[-1]} visit became {episode.kind} stay ({ev.trigger})",
               kind_from=episode.kind_history[-1], kind_to=episode.kind, trigger=ev.trigger,
               inpatient_admitted_at=(ev.admitted_at or ev.occurred_at).isoformat())
    history_flags(state, episode)
    return "applied"


def _admit_existing(state: PatientState, ev: ClinicalEvent, episode: Episode) -> Outcome:
    """An admission for a visit already known: a resend, a late message, an upgrade of class,
    or a new admission after the visit was cancelled."""
    if episode.status == "cancelled":
        late = episode.cancelled_at is not None and ev.recorded_at <= episode.cancelled_at
        if late or episode.merged_into:
            return "duplicate"  # the admission the A11 cancelled, arriving late (or merged away)
        return _readmit_cancelled(state, ev, episode)
    if ev.kind is not None and ev.kind != episode.kind and episode.is_active and \
            _convertible_kind(episode.kind, ev.kind):
        return _convert(state, ev, episode)
    if _admitted_after_ed_discharge(episode, ev):
        return _reopen_for_admission(state, ev, episode)
    if _discharged_stay(episode, ev):
        return _convert_discharged(state, ev, episode)
    admitted = ev.admitted_at or ev.occurred_at
    if episode.admitted_at is None and (episode.discharged_at is None or admitted <= episode.discharged_at):
        # a discharge that arrived first (no PV1-44): the late admission tells when it began
        episode = state.put(replace(episode, admitted_at=admitted))
        episode = state.put(replace(episode, lace=discharge_lace(state, episode)))
        state.emit("EpisodeUpdated", episode, ev.occurred_at, "admission time learned late",
                   fields=["admitted_at"], trigger=ev.trigger)
        history_flags(state, episode)
        return "applied"
    return "duplicate"


def _admitted_after_ed_discharge(episode: Episode, ev: ClinicalEvent) -> bool:
    """Some feeds discharge the ED part (A03) before they admit under the same visit number:
    an admission recorded (EVN-2/MSH-7) or admitted (PV1-44) at or after that discharge, or
    after an ED discharge whose PV1-36 says admitted as an inpatient (09), continues the visit
    as a stay. (Many feeds put the ED arrival or the decision to admit in PV1-44, before the
    ED part's discharge.)"""
    return (_ed_visit_discharged(episode, ev) and episode.discharged_at is not None
            and (ev.occurred_at >= episode.discharged_at or ev.recorded_at >= episode.discharged_at
                 or episode.disposition == ADMITTED_AS_INPATIENT))


def _discharged_stay(episode: Episode, ev: ClinicalEvent) -> bool:
    """The admission of a visit whose discharge came first: admitted and recorded before that
    discharge, which was then the stay's (the admission message was late)."""
    return _ed_visit_discharged(episode, ev) and episode.discharged_at is not None and \
        ev.recorded_at < episode.discharged_at


def _ed_visit_discharged(episode: Episode, ev: ClinicalEvent) -> bool:
    return (episode.status == "discharged" and episode.kind in ("ed", "observation")
            and ev.kind is not None and _convertible_kind(episode.kind, ev.kind))


def _convert_discharged(state: PatientState, ev: ClinicalEvent, episode: Episode) -> Outcome:
    """The visit was a stay, and the discharge already recorded was the stay's: the kind
    becomes the stay's (the admission's work is planned) and the discharge is told again as
    the stay's (its LACE, and the stay's follow-up)."""
    _convert(state, ev, episode)
    episode = state.episodes[episode.id]
    episode = state.put(replace(episode, lace=discharge_lace(state, episode)))
    state.emit("PatientDischarged", episode, episode.discharged_at, f"discharged from {episode.kind}",
               disposition=episode.disposition, discharged_to=episode.discharged_to,
               kind=episode.kind, corrected=False, lace=episode.lace)
    return "applied"


def _reopen_for_admission(state: PatientState, ev: ClinicalEvent, episode: Episode) -> Outcome:
    episode = state.put(replace(
        episode, status="open", discharged_at=None, disposition="", discharged_to="", lace=None,
        flags=tuple(f for f in episode.flags if f.name not in DISCHARGE_FLAGS)))
    state.emit("EpisodeReopened", episode, ev.occurred_at, f"{episode.kind} discharge followed by "
               "an admission under the same visit", reason="admitted after ED discharge",
               readmission=False, trigger=ev.trigger)
    return _convert(state, ev, episode)


def _readmit_cancelled(state: PatientState, ev: ClinicalEvent, episode: Episode) -> Outcome:
    """An admission recorded after the A11: the visit is real again, as this admission says
    (a placeholder left by an early A11 knows only what the A11 carried)."""
    assert ev.kind is not None
    episode = state.put(replace(
        episode, status="open", cancelled_at=None, close_reason="", kind=ev.kind,
        discharged_at=None, disposition="", discharged_to="", lace=None,
        flags=tuple(f for f in episode.flags if f.name not in DISCHARGE_FLAGS),
        patient_class=ev.patient_class, location=ev.location or episode.location,
        hospital_service=ev.hospital_service or episode.hospital_service,
        admission_type=ev.admission_type or episode.admission_type,
        admitted_at=ev.admitted_at or ev.occurred_at, last_event_at=ev.occurred_at))
    state.emit("EpisodeReopened", episode, ev.occurred_at, "visit admitted again after cancel",
               reason="admitted after cancel", readmission=False, trigger=ev.trigger)
    history_flags(state, episode)
    return "applied"


def _convertible_kind(old: str, new: str) -> bool:
    order = {"ed": 0, "observation": 1, "inpatient": 2, "post_acute": 2}
    return order.get(new, 0) > order.get(old, 0)


