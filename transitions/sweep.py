"""The stale sweep: flag episodes open too long (ED over 48 h, a stay over 30 days).

Runs in one worker at a time (a database lease) every minute; the clock is passed in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection

from transcare.db.tables import episode_flags, episodes
from transitions.directory_store import load_members
from transitions.episode_store import load_state, lock_member, save_state
from transitions.flags import stale_flag
from transitions.processor import write_outbox
from transitions.state import Rules


def sweep_stale(conn: Connection, rules: Rules, now: datetime) -> int:
    """Raise ``stale`` on every open episode past its limit; returns how many were flagged."""
    c = episodes.c
    oldest = now - min(rules.stale_ed, rules.stale_inpatient)
    flagged = select(episode_flags.c.episode_id).where(episode_flags.c.flag == "stale")
    rows = conn.execute(select(c.id, c.member_id).where(
        c.status == "open", c.admitted_at < oldest, c.id.not_in(flagged)).order_by(c.member_id))
    by_member: dict[str, list[str]] = {}
    for episode_id, member_id in rows:
        by_member.setdefault(member_id, []).append(episode_id)
    count = 0
    for member_id, ids in by_member.items():
        count += _flag_member(conn, member_id, ids, rules, now)
    return count


def _flag_member(conn: Connection, member_id: str, ids: list[str], rules: Rules,
                 now: datetime) -> int:
    lock_member(conn, member_id)
    member = load_members(conn, [member_id]).get(member_id)
    if member is None:
        return 0
    state = load_state(conn, member)
    state.rules = rules
    for episode_id in ids:
        if episode_id in state.episodes:
            stale_flag(state, state.episodes[episode_id], now)
    if not state.changes:
        return 0
    source = f"stale-sweep|{now.isoformat()}|{member_id}"
    save_state(conn, state, source, now)
    write_outbox(conn, source, state.changes, state.episodes, now)
    return sum(1 for ch in state.changes if ch.type == "FlagRaised")
