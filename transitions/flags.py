"""Risk flags on episodes (DOMAIN.md sections 3 and 6): readmission within 30 days, frequent ED
use, stale open episodes, left against medical advice, expired. Pure.

A flag is raised once per episode (raising it again changes nothing). ``readmission_30d``
raises the member's tier to high; ``frequent_ed`` raises it one step (low -> medium -> high).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from transitions.episode import Episode, Flag, FlagName
from transitions.model import TIERS
from transitions.risk import lace_or_none
from transitions.state import PatientState

READMISSION_KINDS = ("inpatient", "observation")
DISCHARGE_FLAGS: tuple[FlagName, ...] = ("left_ama", "expired")  # taken back when a stay reopens


def raise_flag(state: PatientState, episode: Episode, name: FlagName, at: datetime,
               **detail: Any) -> Episode:
    """``episode`` with the flag, and a FlagRaised change; unchanged when already flagged."""
    if episode.has_flag(name):
        return episode
    episode = state.put(replace(episode, flags=(*episode.flags, Flag(name, at, detail))))
    state.emit("FlagRaised", episode, at, f"flag {name} raised", flag=name, **detail)
    return episode


def history_flags(state: PatientState, episode: Episode) -> Episode:
    """Flags an opening (or newly admitted) episode earns from the member's history."""
    if episode.kind in READMISSION_KINDS:
        episode = _readmission(state, episode)
    if episode.kind == "ed":
        episode = _frequent_ed(state, episode)
    return episode


def _readmission(state: PatientState, episode: Episode) -> Episode:
    start = episode.admitted_at
    if start is None or episode.has_flag("readmission_30d"):
        return episode
    window = state.rules.readmission_window
    earlier = [e for e in state.own_episodes()
               if e.id != episode.id and e.kind in READMISSION_KINDS and e.discharged_at is not None
               and start - window <= e.discharged_at < start]
    if not earlier:
        return episode
    index = max(earlier, key=lambda e: e.discharged_at or start)
    state.raise_tier("high")
    episode = state.put(replace(episode, tier=state.member.effective_tier))
    days = (start - (index.discharged_at or start)).days
    return raise_flag(state, episode, "readmission_30d", start, index_episode_id=index.id,
                      days_since_discharge=days, notify=["supervisor"])


def _frequent_ed(state: PatientState, episode: Episode) -> Episode:
    start = episode.admitted_at
    if start is None or episode.has_flag("frequent_ed"):
        return episode
    window = state.rules.frequent_ed_window
    visits = [e for e in state.own_episodes() if e.id != episode.id and _was_ed(e)
              and e.admitted_at is not None and start - window < e.admitted_at <= start]
    count = len(visits) + 1
    if count < state.rules.frequent_ed_threshold:
        return episode
    current = TIERS.index(state.member.effective_tier)
    state.raise_tier(TIERS[min(current + 1, len(TIERS) - 1)])
    episode = state.put(replace(episode, tier=state.member.effective_tier))
    return raise_flag(state, episode, "frequent_ed", start, ed_visits=count,
                      window_days=window.days)


def _was_ed(episode: Episode) -> bool:
    return episode.kind == "ed" or "ed" in episode.kind_history


def ed_visits_before(state: PatientState, episode: Episode) -> int:
    """ED visits in the LACE window before this episode's admission (the "E" of LACE)."""
    start = episode.admitted_at
    if start is None:
        return 0
    window = state.rules.lace_ed_window
    return sum(1 for e in state.own_episodes() if e.id != episode.id and _was_ed(e)
               and e.admitted_at is not None and start - window <= e.admitted_at < start)


def discharge_lace(state: PatientState, episode: Episode) -> dict[str, Any] | None:
    """LACE at discharge (DOMAIN.md section 6) for a stay with both times; None for an ED visit.
    Acuity: PV1-4 = E, or a stay that began as an ED visit."""
    if episode.kind == "ed" or episode.admitted_at is None or episode.discharged_at is None:
        return None
    emergent = episode.admission_type == "E" or "ed" in episode.kind_history
    score = lace_or_none(episode.admitted_at, episode.discharged_at, emergent, episode.diagnoses,
                         ed_visits_before(state, episode))
    return score.as_dict() if score is not None else None


def stale_flag(state: PatientState, episode: Episode, now: datetime) -> Episode:
    """Flag an open episode that has run too long: ED over 48 h, a stay over 30 days."""
    if not episode.is_active or episode.admitted_at is None or episode.has_flag("stale"):
        return episode
    limit = state.rules.stale_ed if episode.kind == "ed" else state.rules.stale_inpatient
    if now - episode.admitted_at <= limit:
        return episode
    hours = int((now - episode.admitted_at).total_seconds() // 3600)
    return raise_flag(state, episode, "stale", now, open_hours=hours,
                      limit_hours=int(limit.total_seconds() // 3600))
