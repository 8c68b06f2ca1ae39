"""tasks by member: an index on tasks.member_id

A planning batch with a FlagRaised or EpisodesMerged event reads the member's tasks beside
its episodes' (``episode_id = ANY(...) OR member_id = ANY(...)``); without this index that
``OR`` reads the whole tasks table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""
from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_member_id", ["member_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_member_id")
