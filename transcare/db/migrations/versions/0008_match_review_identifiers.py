"""match_review_identifiers: the patient identifiers of each pending review's event

A decision for a member applies the patient's other waiting events with it. It found them by
reading and decoding every pending review in the queue, a cost per decision that grew with the
queue. Now each pending review's PID-3 identifiers that a member could hold (with an authority:
CX-4, else CX-6; normalised as matching compares them: trimmed, upper case) are kept beside it,
and a decision looks up those the member holds. The reviews waiting now are filled in from
their events (one empty row for an event without such an identifier).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "match_review_identifiers",
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("authority", sa.Text(), nullable=False),
        sa.Column("review_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("value", "authority", "review_id",
                                name="pk_match_review_identifiers"),
    )
    op.create_index("ix_match_review_identifiers_review_id", "match_review_identifiers",
                    ["review_id"])
    reviews = sa.table("match_reviews", sa.column("id", sa.BigInteger()),
                       sa.column("status", sa.String()), sa.column("event", sa.Text()))
    conn = op.get_bind()
    pending = conn.execute(sa.select(reviews.c.id, reviews.c.event).where(
        reviews.c.status == "pending", reviews.c.event.is_not(None)))
    # as transitions.processor.index_review: the identifiers a member could hold, or one
    # empty row (indexed, nothing to find it by)
    rows = [{"value": value, "authority": authority, "review_id": review_id}
            for review_id, event in pending
            for value, authority in sorted(_identifiers(event)) or [("", "")]]
    if rows:
        op.bulk_insert(table, rows)


def _identifiers(event_json: str) -> set[tuple[str, str]]:
    """PID-3 of a stored AdtEvent, as transitions.matching.patient_identifiers gives them."""
    try:
        event: Any = json.loads(event_json)
        listed = event["patient"]["identifiers"]
    except (ValueError, KeyError, TypeError):
        return set()
    found = set()
    for cx in listed if isinstance(listed, list) else []:
        if not isinstance(cx, dict):
            continue
        authority = cx.get("assigning_authority") or cx.get("assigning_facility") or ""
        value, authority = str(cx.get("value") or "").strip().upper(), str(authority).strip().upper()
        if value and authority:  # a bare number: no member holds one
            found.add((value, authority))
    return found


def downgrade() -> None:
    op.drop_index("ix_match_review_identifiers_review_id",
                  table_name="match_review_identifiers")
    op.drop_table("match_review_identifiers")
