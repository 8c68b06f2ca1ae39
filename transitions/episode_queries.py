"""Read side of episodes for the API: lists with filters, one episode with its timeline, the
match-review queue. Functions of a sync ``Connection``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, RowMapping

from transcare.db.tables import episode_flags, episode_timeline, episodes, match_reviews, members, outbox
from transitions.directory_store import load_members
from transitions.episode import Episode
from transitions.episode_store import episode_from_row, load_flags


def find_episodes(conn: Connection, *, member_id: str | None = None, status: str | None = None,
                  facility: str | None = None, flag: str | None = None, kind: str | None = None,
                  limit: int = 100, offset: int = 0) -> list[Episode]:
    """Episodes, newest admission first, filtered; merged-away duplicates are left out."""
    c = episodes.c
    conds: list[Any] = []
    for column, value in ((c.member_id, member_id), (c.status, status), (c.kind, kind)):
        if value:
            conds.append(column == value)
    if facility:
        conds.append((c.facility == facility) | (c.facility_key == facility))
    if flag:
        conds.append(c.id.in_(select(episode_flags.c.episode_id).where(episode_flags.c.flag == flag)))
    # Merged-away duplicates are left out by the query itself, so that limit and offset page
    # through what is listed (dropping them from each page repeated rows across pages). An
    # episode not yet admitted (no admission time) comes last on both databases.
    conds.append(func.coalesce(c.detail["merged_into"].as_string(), "") == "")
    query = select(episodes).where(*conds).order_by(
        c.admitted_at.desc().nulls_last(), c.id).limit(limit).offset(offset)
    return _with_flags(conn, list(conn.execute(query).mappings()))


def get_episode(conn: Connection, episode_id: str) -> Episode | None:
    row = conn.execute(select(episodes).where(episodes.c.id == episode_id)).mappings().first()
    return _with_flags(conn, [row])[0] if row is not None else None


def _with_flags(conn: Connection, rows: Sequence[RowMapping]) -> list[Episode]:
    flags = load_flags(conn, [r["id"] for r in rows])
    return [episode_from_row(r, flags.get(r["id"], ())) for r in rows]


def timeline(conn: Connection, episode_id: str) -> list[dict[str, Any]]:
    """The episode's timeline lines in the order they were recorded."""
    c = episode_timeline.c
    query = select(c.id, c.occurred_at, c.type, c.source_id, c.summary, c.detail).where(
        c.episode_id == episode_id).order_by(c.id)
    return [dict(r) for r in conn.execute(query).mappings()]


def member_identifiers(conn: Connection, member_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each member's known identifiers as ``VALUE@AUTHORITY``."""
    return {m.member_id: [str(i) for i in m.identifiers] for m in load_members(conn, member_ids).values()}


def find_reviews(conn: Connection, status: str | None, limit: int) -> list[dict[str, Any]]:
    c = match_reviews.c
    query = select(match_reviews).order_by(c.id.desc()).limit(limit)
    if status:
        query = query.where(c.status == status)
    return [dict(r) for r in conn.execute(query).mappings()]


def count_open(conn: Connection) -> dict[str, int]:
    """Open episodes by kind (for the dashboard and /metrics)."""
    c = episodes.c
    query = select(c.kind, func.count()).where(c.status == "open").group_by(c.kind)
    return {kind: int(n) for kind, n in conn.execute(query)}


def enrolled_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(members)).scalar_one())


def stream_stats(conn: Connection) -> dict[str, Any]:
    """What the ops page and /metrics show about transitions (counts only, no PHI)."""
    c = match_reviews.c
    pending = conn.execute(select(func.count()).where(c.status == "pending")).scalar_one()
    unpublished = conn.execute(select(func.count()).select_from(outbox)
                               .where(outbox.c.published_at.is_(None))).scalar_one()
    return {"open_episodes": count_open(conn), "reviews_pending": int(pending),
            "outbox_backlog": int(unpublished), "enrolled": enrolled_count(conn)}
