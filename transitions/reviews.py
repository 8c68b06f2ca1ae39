"""Deciding a match review: the event held back goes to the member the reviewer chose.

An ADT event whose patient could not be matched with confidence waits in ``match_reviews``
(transitions/processor.py), with the event itself. A reviewer (any active person of the staff
directory) decides, in one transaction:

- a member: the event is applied to that member as if matching had found them (episode,
  timeline, coordinator, flags, and the ``transitions.episodes.v1`` events through the outbox);
  its ``processed_events`` row records the outcome. A discharge held back this way still gets
  its follow-up tasks. The patient's identifiers (PID-3 with an authority) that nobody holds
  become the member's (``member_identifiers.source`` = ``review``), so the patient's next
  messages match at once, and its other events already waiting are matched again with this
  one, in message order (those that match now are recorded as decided by the same reviewer).
- no member (``member_id`` null): the patient is not one of the program's; the event stays
  unapplied and the review drops its copy of it (PHI; the message store keeps the message).

A review recorded before reviews kept their event (migration 0007) is decided all the same:
its ``processed_events`` row is dropped, and the message's replay applies the decision
(``process_batch`` looks for one when matching sends an event to review).

Either way the review records the decision, who made it and when. A review is decided once.
If the chosen member cannot take the event (its visit number belongs to another member's
episode), nothing is written and the reviewer is told why.

A decision that taught a member the wrong patient's identifier is mended with
:func:`forget_identifier`: a learned identifier (``review`` or ``merge``) is dropped, so that
patient's next messages are matched afresh (to review again, where they are ambiguous). The
roster's own identifiers are the roster's: only an import changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, exists, select, update
from sqlalchemy.engine import Connection

from schemas.adt_event import AdtEvent
from transcare.db.tables import match_review_identifiers, match_reviews, member_identifiers, processed_events
from transitions.directory_store import (
    REVIEW,
    ROSTER,
    drop_identifier,
    identifier_owners,
    learn_identifiers,
    load_members,
    load_staff,
)
from transitions.matching import patient_identifiers
from transitions.model import MemberIdentifier
from transitions.processor import VISIT_CONFLICT, Config, index_review, process_batch


class ReviewError(ValueError):
    """Why a decision cannot be recorded; ``status`` is the HTTP status that says so."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Decision:
    review: dict[str, Any]  # the review row as it is now
    # applied, ignored, ... (the processed_events outcome); "not_enrolled"; "replay" (a review
    # recorded before migration 0007: applied when its message is replayed)
    outcome: str
    episode_events: int  # episode events written, for this event and those in also_decided
    # other reviews of the same patient decided with it (their events applied to the member)
    also_decided: list[int] = field(default_factory=list)


def resolve_review(conn: Connection, review_id: int, member_id: str | None, by: str,
                   config: Config, now: datetime) -> Decision:
    """Record the decision on review ``review_id`` (see the module's doc).

    Raises:
        ReviewError: 404 no such review; 409 already decided, or the member cannot take the
            event; 422 ``by``
            is not an active person of the staff directory, or ``member_id`` is not a member.
    """
    c = match_reviews.c
    query = select(match_reviews).where(c.id == review_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise ReviewError(404, f"no match review {review_id}")
    if row["status"] != "pending":
        raise ReviewError(409, f"match review {review_id} was decided already "
                               f"(by {row['resolved_by'] or 'an earlier version'})")
    if not any(s.staff_id == by and s.active for s in load_staff(conn)):
        raise ReviewError(422, f"by: {by!r} is not an active person of the staff directory")
    outcome, events, also = "not_enrolled", 0, list[int]()
    if member_id is not None:
        if member_id not in load_members(conn, [member_id]):
            raise ReviewError(422, f"member_id: {member_id!r} is not a member of the roster")
        outcome, events, also = _apply(conn, row, member_id, by, config, now)
    # A decision that the patient is not one of the program's keeps no copy of the event
    # (PHI): the message store has it.
    cleared = {"event": None} if member_id is None else {}
    conn.execute(update(match_reviews).where(c.id == review_id).values(
        status="resolved", decided_member_id=member_id, resolved_by=by, resolved_at=now, **cleared))
    # decided reviews are found by id from now on: their patients' identifiers go (PHI)
    conn.execute(match_review_identifiers.delete().where(
        match_review_identifiers.c.review_id.in_([review_id, *also])))
    decided = conn.execute(select(match_reviews).where(c.id == review_id)).mappings().one()
    return Decision(dict(decided), outcome, events, also)


@dataclass(frozen=True)
class Forgotten:
    member_id: str
    identifier: MemberIdentifier
    source: str  # review or merge: how the member had learned it


def forget_identifier(conn: Connection, member_id: str, value: str, authority: str,
                      by: str) -> Forgotten:
    """Drop the identifier ``value``@``authority`` (normalised as the roster's) that member
    ``member_id`` learned from a reviewer's decision or a merge. Events already applied stay
    the member's; the patient's next messages are matched without it.

    Raises:
        ReviewError: 404 no such member, or the member does not hold the identifier; 409 it
            is one of the member's roster identifiers; 422 ``by`` is not an active person of
            the staff directory, or the value is empty.
    """
    if not any(s.staff_id == by and s.active for s in load_staff(conn)):
        raise ReviewError(422, f"by: {by!r} is not an active person of the staff directory")
    ident = MemberIdentifier.of(value, authority)
    if not ident.value:
        raise ReviewError(422, "value: the identifier's value is empty")
    if member_id not in load_members(conn, [member_id]):
        raise ReviewError(404, f"no member {member_id!r} in the roster")
    owner, source = identifier_owners(conn, [ident]).get(ident, (None, ""))
    if owner != member_id:
        raise ReviewError(404, f"member {member_id} holds no identifier {ident}")
    if source == ROSTER:
        raise ReviewError(409, f"{ident} is one of member {member_id}'s roster identifiers: "
                               "the roster decides it (remove it from the member's row and "
                               "import the roster)")
    if not drop_identifier(conn, member_id, ident, source):
        raise ReviewError(409, f"{ident} changed while it was being forgotten; ask again")
    return Forgotten(member_id, ident, source)


def _apply(conn: Connection, row: Any, member_id: str, by: str, config: Config,
           now: datetime) -> tuple[str, int, list[int]]:
    if not row["event"]:
        # Recorded before reviews kept their event (migration 0007): the decision is recorded
        # and the event's processed_events row dropped, so the message's replay applies it
        # (process_batch finds the decision when matching sends the event to review again).
        conn.execute(processed_events.delete().where(processed_events.c.event_id == row["event_id"]))
        return "replay", 0, []
    event = _event(row)
    if event is None:
        raise ReviewError(409, f"match review {row['id']}: the stored event is not a valid AdtEvent")
    # The patient's identifiers nobody holds become the member's: the patient's next
    # messages match at once instead of waiting for a reviewer again, and so do the patient's
    # events already waiting, applied with this one in message order.
    learn_identifiers(conn, member_id, patient_identifiers(event), REVIEW)
    waiting = _waiting_of(conn, row["id"], member_id)
    outcome, events, also = "skipped", 0, list[int]()
    for review_id, _, held in sorted([(row["id"], row["message_id"], event), *waiting],
                                    key=lambda w: (w[1], w[0])):
        # the review's processed_events row ("review") is replaced by the outcome
        savepoint = conn.begin_nested()
        conn.execute(processed_events.delete().where(processed_events.c.event_id == held.event_id))
        if review_id == row["id"]:
            result = process_batch(conn, [held], config, now, decided={held.event_id: member_id})
            outcome = next(iter(result.outcomes), ("skipped", ""))[0]
            events += result.episode_events
            if outcome == "review":  # the member cannot take it: roll the whole decision back
                raise ReviewError(409, f"member {member_id} cannot take this event: its visit "
                                       "number belongs to another member's episode")
            savepoint.commit()
            continue
        result = process_batch(conn, [held], config, now)
        if _member_of(conn, held.event_id) != member_id:
            # still not this member's alone (review), or not the member's on its date
            # (unmatched): undone, it waits for its own decision, with what matching says of
            # it now (its visit may be another member's: the reviewer is told why)
            match = _match_of(conn, review_id)
            savepoint.rollback()
            if match is not None:
                conn.execute(update(match_reviews).where(match_reviews.c.id == review_id)
                             .values(reason=match[0], candidates=match[1]))
            continue
        savepoint.commit()
        events += result.episode_events
        also.append(review_id)
        conn.execute(update(match_reviews).where(match_reviews.c.id == review_id).values(
            status="resolved", decided_member_id=member_id, resolved_by=by, resolved_at=now))
    return outcome, events, also


def _event(row: Any) -> AdtEvent | None:
    try:
        return AdtEvent.model_validate_json(row["event"])
    except ValidationError:
        return None


def _match_of(conn: Connection, review_id: int) -> tuple[str, Any] | None:
    """A pending review's reason and candidates."""
    c = match_reviews.c
    row = conn.execute(select(c.reason, c.candidates).where(
        c.id == review_id, c.status == "pending")).first()
    return (row.reason, row.candidates) if row is not None else None


def _member_of(conn: Connection, event_id: str) -> str | None:
    """The member an event was applied to (its processed_events row), None if none."""
    c = processed_events.c
    row = conn.execute(select(c.outcome, c.member_id).where(c.event_id == event_id)).first()
    return row.member_id if row is not None and row.outcome not in ("review", "unmatched") else None


def _index_unindexed(conn: Connection) -> None:
    """Index the pending reviews that have no identifier rows: those a worker of a version
    before migration 0008 held back after the migration ran (a rolling upgrade), so that a
    decision finds them like the others. In the steady state, one probe of the index a
    pending review."""
    c, r = match_reviews.c, match_review_identifiers.c
    rows = conn.execute(select(c.id, c.event).where(
        c.status == "pending", c.event.is_not(None),
        ~exists().where(r.review_id == c.id))).mappings().all()
    for row in rows:
        event = _event(row)
        if event is not None:
            index_review(conn, row["id"], event)


def _waiting_of(conn: Connection, review_id: int, member_id: str) -> list[tuple[int, int, AdtEvent]]:
    """Other reviews waiting whose event carries an identifier that is now the member's
    (reviews of a visit number that belongs to another member's episode excepted): found
    through the member's identifiers (``match_review_identifiers``), whatever the queue's
    length."""
    c, r, m = match_reviews.c, match_review_identifiers.c, member_identifiers.c
    _index_unindexed(conn)
    theirs = select(r.review_id).join(member_identifiers, and_(
        m.value == r.value, m.authority == r.authority)).where(m.member_id == member_id)
    rows = conn.execute(select(c.id, c.message_id, c.event).where(
        c.id.in_(theirs), c.status == "pending", c.id != review_id, c.event.is_not(None),
        c.reason != VISIT_CONFLICT)).mappings().all()
    waiting = [(row["id"], row["message_id"], e) for row in rows if (e := _event(row)) is not None]
    if waiting and conn.dialect.name == "postgresql":
        # only these are locked; one another reviewer is deciding now is theirs
        locked = set(conn.execute(select(c.id).where(
            c.id.in_([i for i, _, _ in waiting]), c.status == "pending").with_for_update(
            skip_locked=True)).scalars())
        waiting = [w for w in waiting if w[0] in locked]
    return waiting
