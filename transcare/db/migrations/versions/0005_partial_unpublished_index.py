"""messages: the relay's index holds only the backlog

``ix_messages_unpublished`` was (published_at, status, id) over every message: three entries a
message (the insert, the relay's published mark, the normaliser's outcome), growing with the
store. It becomes a partial index (the same columns, so SQLite's planner prefers it) of the
accepted messages not yet published: one entry a message, dropped from use once it is
published or processed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_UNPUBLISHED = sa.text("published_at IS NULL AND status = 'accepted'")


def upgrade() -> None:
    op.drop_index("ix_messages_unpublished", table_name="messages")
    op.create_index("ix_messages_unpublished", "messages", ["published_at", "status", "id"],
                    unique=False,
                    sqlite_where=_UNPUBLISHED, postgresql_where=_UNPUBLISHED)


def downgrade() -> None:
    op.drop_index("ix_messages_unpublished", table_name="messages")
    op.create_index("ix_messages_unpublished", "messages", ["published_at", "status", "id"],
                    unique=False)
