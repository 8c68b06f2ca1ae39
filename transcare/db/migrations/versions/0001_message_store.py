"""message store

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sending_facility", sa.String(180), nullable=False),
        sa.Column("control_id", sa.String(199), nullable=True),
        sa.Column("message_type", sa.String(40), nullable=False),
        sa.Column("patient_key", sa.String(250), nullable=False),
        sa.Column("peer", sa.String(80), nullable=False),
        sa.Column("charset", sa.String(20), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("ack_code", sa.String(2), nullable=False),
        sa.Column("ack", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index(
        "uq_messages_facility_control_id", "messages", ["sending_facility", "control_id"],
        unique=True, sqlite_where=sa.text("status != 'rejected'"),
        postgresql_where=sa.text("status != 'rejected'"),
    )
    op.create_index("ix_messages_unpublished", "messages", ["published_at", "status", "id"])
    op.create_index("ix_messages_status", "messages", ["status"])
    op.create_index("ix_messages_received_at", "messages", ["received_at"])


def downgrade() -> None:
    op.drop_table("messages")
