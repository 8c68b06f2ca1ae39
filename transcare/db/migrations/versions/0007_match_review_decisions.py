"""match_reviews: the event under review, and the reviewer's decision

A review keeps the ADT event it holds back (its JSON as the worker read it), so that a decision
(``POST /api/match-reviews/{id}/resolve``) applies it to the member the reviewer chose; and the
decision itself: the member (none: not one of the program's patients), who and when.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("match_reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("decided_member_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("match_reviews", schema=None) as batch_op:
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("decided_member_id")
        batch_op.drop_column("event")
