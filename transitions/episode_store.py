"""Episodes in the database (the system of record): load a member's :class:`PatientState`,
write back what the machine changed, in the caller's transaction.

Functions of a sync SQLAlchemy ``Connection`` (run them with ``Database.write``); they work on
SQLite and PostgreSQL. On PostgreSQL :func:`lock_member` takes the member's row lock, so two
workers handling the same member (events from two facilities, two partitions) take turns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import Delete, Select, bindparam, delete, func, or_, select, text, update
from sqlalchemy.engine import Connection, RowMapping

from transcare.db.engine import json_dumps
from transcare.db.lists import one_of, one_of_param, pair_in, pair_in_param, pair_params
from transcare.db.tables import (
    episode_flags,
    episode_timeline,
    episode_visits,
    episodes,
    member_identifiers,
    members,
    outbox,
)
from transcare.db.upsert import insert_all, upsert
from transitions.directory_store import MERGE, learn_identifiers
from transitions.episode import Episode, Flag, FlagName
from transitions.model import Member, MemberIdentifier
from transitions.state import PatientState

_COLUMNS = ("id", "member_id", "patient_identifier", "facility_key", "facility", "kind", "status",
            "patient_class", "location", "admitted_at", "discharged_at", "disposition",
            "coordinator_id", "coordinator_reason", "tier", "paused", "opted_out", "last_event_at")
_DETAIL = ("opened_by", "visit_numbers", "location_history", "transfer_history", "hospital_service",
           "admission_type",
           "discharged_to", "diagnoses", "lace", "kind_history", "close_reason", "merged_into")


def lock_member(conn: Connection, member_id: str) -> None:
    """PostgreSQL: hold the member's row lock until commit (SQLite: the write lock is held)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(members.c.member_id).where(members.c.member_id == member_id)
                     .with_for_update())


def lock_members(conn: Connection, member_ids: Sequence[str]) -> None:
    """PostgreSQL: take the row locks of ``member_ids`` in member-id order (one statement)."""
    if conn.dialect.name == "postgresql" and member_ids:
        conn.execute(select(members.c.member_id).where(one_of(conn, members.c.member_id, member_ids))
                     .order_by(members.c.member_id).with_for_update())


def lock_visits(conn: Connection, keys: Iterable[tuple[str, str]]) -> None:
    """PostgreSQL: hold a transaction-scoped advisory lock on each visit key (MSH-4, PV1-19),
    in one order, until commit. Two transactions applying events of one visit for different
    members (a worker and a match reviewer, or two workers fed a visit number sent for two
    patients) take turns, so the second reads the first's episode and visit index and finds the
    conflict; without it both wrote the one episode the visit's id names, the last one winning.
    Taken after the member locks, so no two transactions wait for each other in a cycle."""
    if conn.dialect.name != "postgresql":
        return
    ids = sorted({_visit_lock_id(f, v) for f, v in keys if v})
    if ids:
        conn.execute(text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:ids AS bigint[])) AS k"),
                     {"ids": ids})


def _visit_lock_id(facility_key: str, visit_number: str) -> int:
    digest = hashlib.blake2b(f"transcare-visit|{facility_key}|{visit_number}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# The statements run for every event, built once a dialect with bound parameters: building a
# statement (and its cache key) cost about three times what running it costs on SQLite. Lists
# are bound as one_of_param / pair_in_param: one statement whatever their length.
_E = episodes.c


class _Statements(NamedTuple):
    of_members: Select[Any]
    of_members_or_ids: Select[Any]
    visits_of: Select[Any]
    flags_of: Select[Any]
    visits_at: Select[Any]
    drop_flags: Delete


@cache
def _statements(dialect: str) -> _Statements:
    v, f = episode_visits.c, episode_flags.c
    return _Statements(
        of_members=select(episodes).where(one_of_param(dialect, _E.member_id, "members")),
        of_members_or_ids=select(episodes).where(or_(
            one_of_param(dialect, _E.member_id, "members"), one_of_param(dialect, _E.id, "ids"))),
        visits_of=select(v.facility_key, v.visit_number, v.episode_id).where(
            one_of_param(dialect, v.episode_id, "ids")),
        flags_of=select(f.episode_id, f.flag, f.raised_at, f.detail).where(
            one_of_param(dialect, f.episode_id, "ids")).order_by(f.raised_at, f.flag),
        visits_at=select(v.facility_key, v.visit_number, v.episode_id).where(
            pair_in_param(dialect, v.facility_key, v.visit_number, "keys")),
        drop_flags=delete(episode_flags).where(one_of_param(dialect, f.episode_id, "ids")))


def _sql(conn: Connection) -> _Statements:
    return _statements(conn.dialect.name)


_VISIT_OWNER = select(episode_visits.c.episode_id).where(
    episode_visits.c.facility_key == bindparam("facility_key"),
    episode_visits.c.visit_number == bindparam("visit_number"))


def load_state(conn: Connection, member: Member, visit_keys: Iterable[tuple[str, str]] = (),
               prior_identifiers: Sequence[MemberIdentifier] = ()) -> PatientState:
    """The member's episodes and visit index, plus the episodes owning ``visit_keys`` and,
    for a merge, the episodes of ``prior_identifiers`` and of the members holding them."""
    prior_members = members_holding(conn, prior_identifiers) - {member.member_id}
    owners = _visit_owners(conn, visit_keys)
    if prior_identifiers:
        conds = [one_of(conn, _E.member_id, [member.member_id, *prior_members]),
                 one_of(conn, _E.patient_identifier, [str(i) for i in prior_identifiers])]
        if owners:
            conds.append(one_of(conn, _E.id, set(owners.values())))
        query = conn.execute(select(episodes).where(or_(*conds)))
    elif owners:
        query = conn.execute(_sql(conn).of_members_or_ids, {"members": [member.member_id],
                                                  "ids": sorted(set(owners.values()))})
    else:
        query = conn.execute(_sql(conn).of_members, {"members": [member.member_id]})
    rows = list(query.mappings())
    loaded = _episodes(conn, rows)
    visits = _visits_of(conn, list(loaded))
    visits.update(owners)
    return PatientState(member=member, episodes=loaded, visits=visits,
                        prior_members=frozenset(prior_members))


def members_holding(conn: Connection, ids: Sequence[MemberIdentifier]) -> set[str]:
    """The members holding any of ``ids`` (a merge's prior identifiers)."""
    if not ids:
        return set()
    c = member_identifiers.c
    query = select(c.member_id).where(pair_in(conn, c.value, c.authority,
                                              [(i.value, i.authority) for i in ids]))
    return set(conn.execute(query).scalars())


def _visit_owners(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for facility_key, visit_number in set(keys):
        owner = conn.execute(_VISIT_OWNER, {"facility_key": facility_key,
                                            "visit_number": visit_number}).scalar_one_or_none()
        if owner is not None:
            found[(facility_key, visit_number)] = owner
    return found


def _visits_of(conn: Connection, episode_ids: list[str]) -> dict[tuple[str, str], str]:
    if not episode_ids:
        return {}
    return {(f, v): e for f, v, e in conn.execute(_sql(conn).visits_of, {"ids": episode_ids})}


def _episodes(conn: Connection, rows: Sequence[RowMapping]) -> dict[str, Episode]:
    flags = load_flags(conn, [r["id"] for r in rows])
    return {r["id"]: episode_from_row(r, flags.get(r["id"], ())) for r in rows}


def load_flags(conn: Connection, episode_ids: Sequence[str]) -> dict[str, tuple[Flag, ...]]:
    if not episode_ids:
        return {}
    found: dict[str, list[Flag]] = {}
    for episode_id, name, raised_at, detail in conn.execute(_sql(conn).flags_of,
                                                           {"ids": list(episode_ids)}):
        found.setdefault(episode_id, []).append(Flag(cast(FlagName, name), raised_at, detail or {}))
    return {k: tuple(v) for k, v in found.items()}


def episode_from_row(row: RowMapping, flags: tuple[Flag, ...] = ()) -> Episode:
    detail: Mapping[str, Any] = row["detail"] or {}
    fields: dict[str, Any] = {name: row[name] for name in _COLUMNS}
    for name in _DETAIL:
        value = detail.get(name)
        fields[name] = tuple(value or ()) if name in _TUPLES else (
            _DEFAULTS[name] if value is None else value)
    fields["transfer_history"] = tuple(tuple(entry) for entry in fields["transfer_history"])
    for name in _TIMES:
        value = detail.get(name)
        fields[name] = datetime.fromisoformat(value) if value else None
    return Episode(**fields, flags=flags)


_TIMES = ("cancelled_at", "transfer_cancelled_at")  # in the detail JSON as ISO 8601
_TUPLES = {"visit_numbers", "location_history", "transfer_history", "diagnoses", "kind_history"}
_DEFAULTS: dict[str, Any] = {"opened_by": "", "hospital_service": "", "admission_type": "",
                             "discharged_to": "", "lace": None, "close_reason": "", "merged_into": ""}


def episode_row(episode: Episode, now: datetime) -> dict[str, Any]:
    row = {name: getattr(episode, name) for name in _COLUMNS}
    detail = {name: _jsonable(getattr(episode, name)) for name in _DETAIL}
    for name in _TIMES:
        value = getattr(episode, name)
        detail[name] = value.isoformat() if value else None
    return {**row, "detail": detail, "updated_at": now}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


def save_state(conn: Connection, state: PatientState, source_id: str, now: datetime) -> None:
    """Write back what the machine changed: episodes, flags, visit keys, timeline lines, a
    raised tier, learned identifiers, timelines moved by a merge."""
    changed = [state.episodes[i] for i in sorted(state.changed)]
    _write_episodes(conn, changed, state.new_visits, _timeline_rows(state, source_id), now)
    for old, new in state.moved_timelines.items():
        conn.execute(update(episode_timeline).where(episode_timeline.c.episode_id == old)
                     .values(episode_id=new))
    _save_member(conn, state)


def _write_episodes(conn: Connection, changed: Sequence[Episode],
                    new_visits: Mapping[tuple[str, str], str], timeline: list[dict[str, Any]],
                    now: datetime) -> None:
    upsert(conn, episodes, ["id"], [episode_row(e, now) for e in changed])
    _save_flags(conn, changed)
    if new_visits:
        upsert(conn, episode_visits, ["facility_key", "visit_number"], [
            {"facility_key": f, "visit_number": v, "episode_id": e}
            for (f, v), e in sorted(new_visits.items())])
    if timeline:
        insert_all(conn, episode_timeline, timeline)


def _timeline_rows(state: PatientState, source_id: str) -> list[dict[str, Any]]:
    return [{"episode_id": c.episode_id, "occurred_at": c.occurred_at, "type": c.type,
             "source_id": source_id, "summary": c.summary, "detail": _detail_json(c.detail)}
            for c in state.changes]


def _save_member(conn: Connection, state: PatientState) -> None:
    """A raised tier and identifiers learned from a merge: written at once (the member is
    read again by the next event that needs it)."""
    if state.raised_tier is not None:
        conn.execute(update(members).where(members.c.member_id == state.member.member_id)
                     .values(raised_tier=state.raised_tier))
    learn_identifiers(conn, state.member.member_id, state.learned, MERGE)


@dataclass
class BatchEpisodes:
    """The episodes of one batch's members, read at its start in four statements, and what
    the batch changes, written at its end (:meth:`flush`) in a few.

    Event by event, :func:`load_state` and :func:`save_state` cost about ten statements for
    every event of an enrolled member, most of the transitions stage's time. Here each event's
    :class:`PatientState` is cut from what the batch holds (:meth:`state`, the same episodes
    and visit index :func:`load_state` reads) and what the machine changed is kept for the
    batch's later events (:meth:`save`). Nothing else writes the member's episodes meanwhile:
    on SQLite the transaction holds the write lock, on PostgreSQL the members' row locks.

    A merge reaches beyond the batch's members: :meth:`retire` writes what is pending, and
    from then on the batch's events are read and written one by one.
    """

    episodes: dict[str, Episode] = field(default_factory=dict)
    by_member: dict[str, set[str]] = field(default_factory=dict)
    visits: dict[tuple[str, str], str] = field(default_factory=dict)  # (MSH-4, PV1-19) -> id
    keys_of: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # id -> visit keys
    changed: set[str] = field(default_factory=set)
    fresh: set[str] = field(default_factory=set)  # changed, not yet made as_stored
    new_visits: dict[tuple[str, str], str] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    retired: bool = False

    @classmethod
    def read(cls, conn: Connection, member_ids: Collection[str],
             visit_keys: Collection[tuple[str, str]]) -> BatchEpisodes:
        """The episodes of ``member_ids`` and of whoever owns ``visit_keys``, their flags and
        their visit keys."""
        sql = _sql(conn)
        keys = pair_params(conn.dialect.name, "keys", sorted(visit_keys))
        owners = ({(f, v): e for f, v, e in conn.execute(sql.visits_at, keys)}
                  if visit_keys else {})
        rows = list(conn.execute(sql.of_members_or_ids, {
            "members": sorted(member_ids), "ids": sorted(set(owners.values()))}).mappings())
        batch = cls(episodes=_episodes(conn, rows))
        for episode in batch.episodes.values():
            batch.by_member.setdefault(episode.member_id, set()).add(episode.id)
        batch._index({**_visits_of(conn, list(batch.episodes)), **owners})
        return batch

    def _index(self, visits: Mapping[tuple[str, str], str]) -> None:
        for key, episode_id in visits.items():
            self.visits[key] = episode_id
            self.keys_of.setdefault(episode_id, set()).add(key)

    def state(self, member: Member, visit_keys: Iterable[tuple[str, str]] = ()) -> PatientState:
        """What :func:`load_state` would read now: the member's episodes, the episodes owning
        ``visit_keys``, and their visit index."""
        owners = {k: self.visits[k] for k in visit_keys if k in self.visits}
        ids = self.by_member.get(member.member_id, set()) | set(owners.values())
        for i in ids & self.fresh:
            self.episodes[i] = as_stored(self.episodes[i])
        self.fresh -= ids
        loaded = {i: self.episodes[i] for i in ids if i in self.episodes}
        visits = {k: i for i in loaded for k in self.keys_of.get(i, ()) if self.visits[k] == i}
        visits.update(owners)
        return PatientState(member=member, episodes=loaded, visits=visits)

    def save(self, conn: Connection, state: PatientState, source_id: str) -> None:
        """Keep what the machine changed for the batch's later events and for :meth:`flush`;
        a raised tier and learned identifiers are written at once, as :func:`save_state`
        does."""
        for episode_id in state.changed:
            episode = state.episodes[episode_id]
            self.episodes[episode_id] = episode
            self.fresh.add(episode_id)  # made as stored when an event reads it again
            self.by_member.setdefault(episode.member_id, set()).add(episode_id)
            self.changed.add(episode_id)
        self._index(state.new_visits)
        self.new_visits.update(state.new_visits)
        self.timeline.extend(_timeline_rows(state, source_id))
        _save_member(conn, state)

    def flush(self, conn: Connection, now: datetime) -> None:
        """Write what the batch changed: episodes, flags, visit keys, timeline lines, then the
        outbox rows, each in the order the events made them."""
        _write_episodes(conn, [self.episodes[i] for i in sorted(self.changed)], self.new_visits,
                        self.timeline, now)
        if self.outbox:
            insert_all(conn, outbox, self.outbox)
        self.changed, self.new_visits, self.timeline, self.outbox = set(), {}, [], []

    def retire(self, conn: Connection, now: datetime) -> None:
        """Write what is pending and stop serving states (a merge is next)."""
        self.flush(conn, now)
        self.retired = True


def as_stored(episode: Episode) -> Episode:
    """``episode`` as the database gives it back: its times in UTC, its detail and flags as
    JSON reads them, its flags in the order :func:`load_flags` reads them. The batch's later
    events then see exactly what reading it again would give them."""
    row = episode_row(episode, datetime.now(UTC))
    for name in ("admitted_at", "discharged_at", "last_event_at"):
        row[name] = _utc(row[name])
    row["detail"] = orjson.loads(json_dumps(row["detail"]))
    flags = sorted((Flag(f.name, cast(datetime, _utc(f.raised_at)),
                         orjson.loads(json_dumps(_detail_json(f.detail))) or {})
                    for f in episode.flags), key=lambda f: (f.raised_at, f.name))
    return episode_from_row(cast(RowMapping, row), tuple(flags))


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _save_flags(conn: Connection, changed: Sequence[Episode]) -> None:
    if not changed:
        return
    conn.execute(_sql(conn).drop_flags, {"ids": [e.id for e in changed]})
    rows = [{"episode_id": e.id, "flag": f.name, "raised_at": f.raised_at,
             "detail": _detail_json(f.detail)} for e in changed for f in e.flags]
    if rows:
        insert_all(conn, episode_flags, rows)


def _detail_json(detail: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else _jsonable(v)) for k, v in detail.items()}


def open_caseload(conn: Connection) -> dict[str, int]:
    """Open episodes per coordinator (the load DOMAIN.md section 5 balances)."""
    c = episodes.c
    query = select(c.coordinator_id, func.count()).where(c.status == "open").group_by(c.coordinator_id)
    return {staff_id: int(n) for staff_id, n in conn.execute(query) if staff_id}
