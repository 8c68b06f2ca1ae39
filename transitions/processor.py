"""The transitions service: ADT events in, episodes and episode events out, in one transaction.

:func:`process_batch` runs inside the caller's transaction (``Database.write``). For each
event not yet handled it matches the roster, applies the episode machine and writes the new
state, the timeline, the outbox rows for ``transitions.episodes.v1`` and the
``processed_events`` row, so a replay of the same event finds that row and changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import structlog
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.engine import Connection

from schemas.adt_event import AdtEvent, AdtEventView
from schemas.episode_event import EpisodeEvent, EpisodeSnapshot
from schemas.topics import EPISODES
from transcare.db.lists import keys_present, one_of
from transcare.db.tables import match_review_identifiers, match_reviews, outbox, processed_events
from transcare.db.upsert import dialect_insert, insert_all
from transitions.clinical import ClinicalEvent, clinical_event
from transitions.directory_store import load_members, load_staff, member_ids_by_identifier, members_born_on
from transitions.episode import Change, Episode
from transitions.episode_store import (
    BatchEpisodes,
    load_state,
    lock_members,
    lock_visits,
    members_holding,
    open_caseload,
    save_state,
)
from transitions.machine import apply
from transitions.matching import (
    MatchPolicy,
    MatchResult,
    decide,
    event_demographics,
    event_identifiers,
    match,
    patient_identifiers,
)
from transitions.model import Member, MemberIdentifier, StaffMember
from transitions.state import Rules

log = structlog.get_logger("transcare.transitions")
VISIT_CONFLICT = "visit number belongs to another member's episode"  # a match review's reason


@dataclass(frozen=True)
class Config:
    rules: Rules = field(default_factory=Rules)
    policy: MatchPolicy = field(default_factory=MatchPolicy)


@dataclass
class BatchResult:
    """What a batch did: outcome counts by facility (for metrics), and how many episode
    events went to the outbox."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (outcome, facility)
    episode_events: int = 0
    skipped: int = 0  # already processed (replays, redeliveries)


@dataclass(frozen=True, slots=True)
class Received:
    """An ``adt.events.v1`` record as the worker reads it: the view of whose event it is, and
    its JSON, which becomes the whole :class:`AdtEvent` only for an event that may be an
    enrolled patient's (an identifier of the roster, or a member's birth date). Most events of
    a feed are not: reading just the view costs about a third as much."""

    view: AdtEventView
    json: bytes

    @classmethod
    def of(cls, value: bytes) -> Received:
        """Raises ValidationError when the record is not an ADT event (schema version 1)."""
        return cls(AdtEventView.model_validate_json(value), value)

    def full(self) -> AdtEvent:
        """The whole event; raises ValidationError when the JSON is not a valid one."""
        return AdtEvent.model_validate_json(self.json)


Incoming = AdtEvent | Received


def process_batch(conn: Connection, events: Sequence[Incoming], config: Config,
                  now: datetime, decided: Mapping[str, str] | None = None) -> BatchResult:
    """``decided``: event id -> the member a match reviewer chose for it (transitions/reviews.py):
    that event is applied to that member without matching."""
    result = BatchResult()
    unprocessed = _unprocessed(conn, events)
    result.skipped = len(events) - len(unprocessed)
    if not unprocessed:
        return result
    given = {view_of(e).event_id: e for e in unprocessed}
    todo = [view_of(e) for e in unprocessed]
    identifiers = {e.event_id: event_identifiers(e) for e in todo}
    owners = member_ids_by_identifier(conn, {i for ids in identifiers.values() for i in ids})
    candidates = _candidates(conn, todo, identifiers, owners)
    staff = {s.staff_id: s for s in load_staff(conn)}
    caseload = Counter(open_caseload(conn))
    rows = []
    born: dict[object, dict[str, Member]] = {}
    for m in candidates.values():
        born.setdefault(m.birth_date, {})[m.member_id] = m
    full: dict[str, AdtEvent] = {}  # the events that may be a member's, read whole
    found = {e.event_id: _match(e, given[e.event_id], identifiers, owners, candidates, born,
                                config, full, (decided or {}).get(e.event_id)) for e in todo}
    found.update(_decided_reviews(conn, [i for i, f in found.items()
                                         if f is not None and f.outcome == "review" and i in full]))
    clinical = {i: clinical_event(full[i], config.rules.post_acute_facilities)
                for i, f in found.items()
                if f is not None and f.outcome not in ("unmatched", "review") and f.member_id}
    # Lock every member this batch changes, in one order, before changing any: two workers
    # (or the stale sweep) touching the same members never deadlock. A merge also changes the
    # members holding its prior identifiers: they are locked too, so a merge another worker
    # commits meanwhile cannot be undone by this batch writing back what it read before.
    priors = [i for ev in clinical.values() if ev.action == "merge" for i in ev.prior_identifiers]
    locked = sorted({f.member_id for f in found.values() if f is not None and f.member_id}
                    | members_holding(conn, priors))
    lock_members(conn, locked)
    lock_visits(conn, [_visit_key(ev) for ev in clinical.values()])
    if conn.dialect.name == "postgresql" and locked:
        # Read them again under the row locks: another worker or an import may have changed a
        # member (tier, raised tier, consent) since the matching read above. (SQLite: the
        # transaction holds the database's write lock from its start; nothing can change.)
        candidates.update(load_members(conn, locked))
    batch = (BatchEpisodes.read(conn, locked, {_visit_key(ev) for ev in clinical.values()
                                               if ev.visit_number})
             if clinical else None)
    for view in todo:
        matched = found[view.event_id]
        outcome, member_id = ("failed", None) if matched is None else _handle(
            conn, view, full.get(view.event_id), matched, clinical.get(view.event_id),
            candidates, staff, caseload, config, now, result, batch)
        rows.append(_processed_row(view, outcome, member_id, now))
        result.outcomes[(outcome, view.header.sending_facility or "")] += 1
    if batch is not None:
        batch.flush(conn, now)
    _record_all(conn, rows)
    return result


def view_of(event: Incoming) -> AdtEvent | AdtEventView:
    """The fields of an incoming event that matching and the records read."""
    return event.view if isinstance(event, Received) else event


def _visit_key(ev: ClinicalEvent) -> tuple[str, str]:
    return (ev.facility_key, ev.visit_number or "")


def _match(event: AdtEvent | AdtEventView, given: Incoming,
           identifiers: dict[str, tuple[MemberIdentifier, ...]],
           owners: dict[MemberIdentifier, str], candidates: dict[str, Member],
           born: dict[object, dict[str, Member]], config: Config,
           full: dict[str, AdtEvent], decided: str | None = None) -> MatchResult | None:
    """Match one event against its own candidates: its identifier hits and the members
    sharing its birth date. An event with candidates is read whole into ``full`` (its
    demographics, its date); None when its JSON is then not a valid event. ``decided``: the
    member a match reviewer chose (the event is read whole and goes to that member)."""
    if decided is not None:
        whole = _whole(given, event)
        if whole is None:
            return None
        full[event.event_id] = whole
        return MatchResult("matched", decided, "none", 0.0, (), "decided by a match review")
    mine = {owners[i]: candidates[owners[i]] for i in identifiers[event.event_id]
            if i in owners and owners[i] in candidates}
    if event.patient.birth_date is not None:
        mine.update(born.get(event.patient.birth_date, {}))
    if not mine and not any(i in owners for i in identifiers[event.event_id]):
        # Nobody enrolled holds its identifiers or shares its birth date (most events of a
        # feed): unmatched, as match() decides, without reading the rest of the event.
        return decide((), config.policy)
    whole = _whole(given, event)
    if whole is None:
        return None
    full[event.event_id] = whole
    return match(identifiers[event.event_id], event_demographics(whole), owners, mine,
                 _day(whole).date(), config.policy)


def _decided_reviews(conn: Connection, event_ids: list[str]) -> dict[str, MatchResult]:
    """Events that would go to review but a reviewer has decided already (a review recorded
    before reviews kept their event is decided first and its message replayed): the member
    chosen, as a match."""
    if not event_ids:
        return {}
    c = match_reviews.c
    rows = conn.execute(select(c.event_id, c.decided_member_id).where(
        one_of(conn, c.event_id, event_ids), c.status == "resolved", c.decided_member_id.is_not(None)))
    return {event_id: MatchResult("matched", member, "none", 0.0, (), "decided by a match review")
            for event_id, member in rows}


def _whole(given: Incoming, event: AdtEvent | AdtEventView) -> AdtEvent | None:
    if not isinstance(given, Received):
        return given
    try:
        return given.full()
    except ValidationError as exc:
        log.error("transitions.undecodable_event", event_id=event.event_id,
                  errors=exc.error_count())
        return None


def _unprocessed(conn: Connection, events: Sequence[Incoming]) -> list[Incoming]:
    """Events without a ``processed_events`` row, one record an event id, in the order of
    their first occurrence: the first record, or a later one that is a valid event whole
    where the first is not (a replay bringing a record written before a producer's fix and
    one written after into one batch)."""
    ids = list({view_of(e).event_id for e in events})
    c = processed_events.c
    done = keys_present(conn, c.event_id, ids, c.outcome != "failed")
    todo: dict[str, Incoming] = {}
    for e in events:
        if (event_id := view_of(e).event_id) in done:
            continue
        kept = todo.get(event_id)
        if kept is None or (not _readable(kept) and _readable(e)):
            todo[event_id] = e  # a replaced record keeps the first one's place
    return list(todo.values())


def _readable(event: Incoming) -> bool:
    """Whether the record is a valid event whole (read only for an event id seen twice)."""
    if not isinstance(event, Received):
        return True
    try:
        event.full()
    except ValidationError:
        return False
    return True


def _candidates(conn: Connection, events: Sequence[AdtEvent | AdtEventView],
                identifiers: dict[str, tuple[MemberIdentifier, ...]],
                owners: dict[MemberIdentifier, str]) -> dict[str, Member]:
    """Members the events could be: identifier hits, and for the rest, members born that day."""
    hit = {owners[i] for ids in identifiers.values() for i in ids if i in owners}
    found = load_members(conn, hit)
    dates = {e.patient.birth_date for e in events if e.patient.birth_date is not None
             and not any(i in owners for i in identifiers[e.event_id])}
    if dates:
        found.update({m.member_id: m for m in members_born_on(conn, dates)})
    return found


def _handle(conn: Connection, view: AdtEvent | AdtEventView, event: AdtEvent | None,
            found: MatchResult, ev: ClinicalEvent | None, members: dict[str, Member],
            staff: dict[str, StaffMember], caseload: Counter[str], config: Config,
            now: datetime, result: BatchResult,
            batch: BatchEpisodes | None) -> tuple[str, str | None]:
    """``event`` is the whole event when matching read it (every event with candidates)."""
    if found.outcome == "unmatched":
        return "unmatched", None
    if found.outcome == "review" or found.member_id is None or ev is None or event is None:
        _review(conn, event or view, found.reason, [(c.member_id, c.score) for c in found.candidates],
                now)
        return "review", None
    outcome = _apply(conn, event, ev, found.member_id, members, staff, caseload, config, now,
                     result, batch)
    return outcome, found.member_id


def _apply(conn: Connection, event: AdtEvent, ev: ClinicalEvent, member_id: str,
           members: dict[str, Member], staff: dict[str, StaffMember], caseload: Counter[str],
           config: Config, now: datetime, result: BatchResult, batch: BatchEpisodes | None) -> str:
    """Apply one event to its member's state. ``members`` holds the batch's members as
    loaded; a member whose row this event changes (a raised tier, identifiers learned from a
    merge) is dropped from it, so the next event of the batch reads it again. The state
    comes from ``batch`` and goes back to it, except for a merge, which retires the batch
    and, like every event after it, reads and writes the database itself."""
    member = members.get(member_id) or load_members(conn, [member_id])[member_id]
    keys = [(ev.facility_key, ev.visit_number)] if ev.visit_number else []
    if batch is not None and not batch.retired and ev.action == "merge":
        batch.retire(conn, now)
    held = batch if batch is not None and not batch.retired else None
    state = (held.state(member, keys) if held is not None else
             load_state(conn, member, keys, ev.prior_identifiers if ev.action == "merge" else ()))
    state.staff, state.caseload, state.rules = staff, caseload, config.rules
    outcome = apply(state, ev)
    if outcome == "conflict":
        _review(conn, event, VISIT_CONFLICT, [(member_id, 100.0)], now)
        return "review"
    rows = outbox_rows(event.event_id, state.changes, state.episodes, now)
    if held is not None:
        held.save(conn, state, event.event_id)
        held.outbox.extend(rows)
    else:
        save_state(conn, state, event.event_id, now)
        _add_outbox(conn, rows)
    if state.raised_tier is not None or state.learned:
        members.pop(member_id, None)
    result.episode_events += len(rows)
    for change in state.changes:
        if change.type == "CoordinatorAssigned":
            caseload[str(change.detail.get("coordinator_id") or "")] += 1
    return outcome


def write_outbox(conn: Connection, source_id: str, changes: Sequence[Change],
                 episodes: dict[str, Episode], now: datetime) -> int:
    """Write the outbox rows of ``changes`` (``transitions.episodes.v1``); how many."""
    rows = outbox_rows(source_id, changes, episodes, now)
    _add_outbox(conn, rows)
    return len(rows)


def _add_outbox(conn: Connection, rows: list[dict[str, object]]) -> None:
    if rows:
        insert_all(conn, outbox, rows)


def outbox_rows(source_id: str, changes: Sequence[Change], episodes: dict[str, Episode],
                now: datetime) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n, change in enumerate(changes):
        episode = episodes[change.episode_id]
        message = EpisodeEvent(
            event_id=f"{source_id}#{n}", type=change.type, member_id=episode.member_id,
            episode_id=episode.id, occurred_at=change.occurred_at, source_event_id=source_id,
            summary=change.summary, episode=snapshot(episode), detail=dict(change.detail))
        rows.append({"topic": EPISODES.name, "key": episode.member_id, "created_at": now,
                     "payload": orjson.dumps(message.model_dump(mode="json")).decode()})
    return rows


def snapshot(episode: Episode) -> EpisodeSnapshot:
    """The episode as published (see :class:`schemas.episode_event.EpisodeSnapshot`)."""
    lace = episode.lace.get("total") if episode.lace else None
    return EpisodeSnapshot(
        id=episode.id, member_id=episode.member_id, patient_identifier=episode.patient_identifier,
        kind=episode.kind, status=episode.status, facility=episode.facility,
        facility_key=episode.facility_key, visit_numbers=episode.visit_numbers,
        patient_class=episode.patient_class or None, location=episode.location or None,
        hospital_service=episode.hospital_service or None, admitted_at=episode.admitted_at,
        discharged_at=episode.discharged_at, disposition=episode.disposition or None,
        discharged_to=episode.discharged_to or None, diagnoses=episode.diagnoses,
        coordinator_id=episode.coordinator_id or None,
        coordinator_reason=episode.coordinator_reason or None, tier=episode.tier,
        flags=episode.flag_names, paused=episode.paused, opted_out=episode.opted_out,
        kind_history=episode.kind_history, lace_total=int(lace) if lace is not None else None,
        close_reason=episode.close_reason or None)


def _review(conn: Connection, event: AdtEvent | AdtEventView, reason: str,
            candidates: list[tuple[str, float]], now: datetime) -> None:
    """Hold the event back for a reviewer, with the event itself (so a decision can apply it).
    An event already waiting for a reviewer gets this match's reason and candidates (matched
    again after a decision taught its identifier, its visit may now be another member's); a
    decided one is left as it is (a reviewer's choice that conflicts again is refused by
    transitions/reviews.py, which rolls back)."""
    insert = dialect_insert(conn, match_reviews)
    pending = conn.execute(insert.values(
        event_id=event.event_id, message_id=event.message_id,
        facility=event.header.sending_facility or "", reason=reason,
        candidates=[{"member_id": m, "score": s} for m, s in candidates], status="pending",
        created_at=now,
        event=event.model_dump_json() if isinstance(event, AdtEvent) else None,
    ).on_conflict_do_update(
        index_elements=["event_id"],
        set_={"reason": insert.excluded.reason, "candidates": insert.excluded.candidates},
        where=match_reviews.c.status == "pending").returning(match_reviews.c.id)).first()
    if pending is not None and isinstance(event, AdtEvent):
        index_review(conn, pending.id, event)


# The row of a review whose event has no identifier a member could hold: it is indexed all
# the same (a decision looks for reviews without rows: those an earlier version held back).
NO_KEYS = MemberIdentifier("", "")


def index_review(conn: Connection, review_id: int, event: AdtEvent) -> None:
    """The patient's identifiers a member could hold (PID-3 with an authority, normalised), by
    which a decision finds the patient's waiting events (``match_review_identifiers``)."""
    keys = sorted({i for i in patient_identifiers(event) if i.value and i.authority}) or [NO_KEYS]
    conn.execute(dialect_insert(conn, match_review_identifiers).on_conflict_do_nothing(
        index_elements=["value", "authority", "review_id"]),
        [{"value": i.value, "authority": i.authority, "review_id": review_id} for i in keys])


def _processed_row(event: AdtEvent | AdtEventView, outcome: str, member_id: str | None,
                   now: datetime) -> dict[str, object]:
    return {"event_id": event.event_id, "message_id": event.message_id,
            "facility": event.header.sending_facility or "", "outcome": outcome,
            "member_id": member_id, "processed_at": now}


def _record_all(conn: Connection, rows: list[dict[str, object]]) -> None:
    """One ``processed_events`` row per event, replacing the row of an earlier failed try
    (looked up now, not from the batch's first read: another worker may have committed one
    since). The failed rows are found by key and deleted only when there are some: a
    ``DELETE ... WHERE event_id = ANY(..)`` for every batch kept the plan made on the empty
    table on PostgreSQL, a read of the whole table (0.9 ms a batch in bench/e2e, growing with
    the table), to delete nothing in the steady state."""
    if not rows:
        return
    c = processed_events.c
    failed = keys_present(conn, c.event_id, [r["event_id"] for r in rows], c.outcome == "failed")
    if failed:
        conn.execute(processed_events.delete().where(one_of(conn, c.event_id, failed),
                                                     c.outcome == "failed"))
    insert_all(conn, processed_events, rows)


def record_failure(conn: Connection, event: Incoming, now: datetime) -> None:
    """An event that could not be processed: visible (outcome ``failed``), retried on replay."""
    _record_all(conn, [_processed_row(view_of(event), "failed", None, now)])


def _day(event: AdtEvent) -> datetime:
    ev = event.event
    occurred = ev.occurred_at if ev is not None else None
    return occurred or event.header.message_time or event.received_at
