"""roster staff episodes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('episode_flags',
    sa.Column('episode_id', sa.String(length=40), nullable=False),
    sa.Column('flag', sa.String(length=24), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('episode_id', 'flag', name='pk_episode_flags')
    )
    with op.batch_alter_table('episode_flags', schema=None) as batch_op:
        batch_op.create_index('ix_episode_flags_flag', ['flag'], unique=False)

    op.create_table('episode_timeline',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('episode_id', sa.String(length=40), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('source_id', sa.String(length=400), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_episode_timeline'))
    )
    with op.batch_alter_table('episode_timeline', schema=None) as batch_op:
        batch_op.create_index('ix_episode_timeline_episode_id', ['episode_id', 'id'], unique=False)

    op.create_table('episode_visits',
    sa.Column('facility_key', sa.String(length=180), nullable=False),
    sa.Column('visit_number', sa.String(length=80), nullable=False),
    sa.Column('episode_id', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('facility_key', 'visit_number', name='pk_episode_visits')
    )
    with op.batch_alter_table('episode_visits', schema=None) as batch_op:
        batch_op.create_index('ix_episode_visits_episode_id', ['episode_id'], unique=False)

    op.create_table('episodes',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('patient_identifier', sa.String(length=140), nullable=False),
    sa.Column('facility_key', sa.String(length=180), nullable=False),
    sa.Column('facility', sa.String(length=180), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('patient_class', sa.String(length=4), nullable=False),
    sa.Column('location', sa.String(length=200), nullable=False),
    sa.Column('admitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('discharged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('disposition', sa.String(length=4), nullable=False),
    sa.Column('coordinator_id', sa.String(length=64), nullable=False),
    sa.Column('coordinator_reason', sa.String(length=40), nullable=False),
    sa.Column('tier', sa.String(length=8), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('opted_out', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_episodes'))
    )
    with op.batch_alter_table('episodes', schema=None) as batch_op:
        batch_op.create_index('ix_episodes_facility', ['facility'], unique=False)
        batch_op.create_index('ix_episodes_member_id', ['member_id'], unique=False)
        batch_op.create_index('ix_episodes_status', ['status'], unique=False)

    op.create_table('leases',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('holder', sa.String(length=80), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_leases'))
    )
    op.create_table('match_reviews',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=400), nullable=False),
    sa.Column('message_id', sa.BigInteger(), nullable=False),
    sa.Column('facility', sa.String(length=180), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('candidates', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_match_reviews')),
    sa.UniqueConstraint('event_id', name=op.f('uq_match_reviews_event_id'))
    )
    with op.batch_alter_table('match_reviews', schema=None) as batch_op:
        batch_op.create_index('ix_match_reviews_status', ['status'], unique=False)

    op.create_table('member_identifiers',
    sa.Column('value', sa.String(length=64), nullable=False),
    sa.Column('authority', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('value', 'authority', name='pk_member_identifiers')
    )
    with op.batch_alter_table('member_identifiers', schema=None) as batch_op:
        batch_op.create_index('ix_member_identifiers_member_id', ['member_id'], unique=False)

    op.create_table('members',
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('family_name', sa.String(length=120), nullable=False),
    sa.Column('given_name', sa.String(length=120), nullable=False),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=1), nullable=False),
    sa.Column('phone', sa.String(length=40), nullable=False),
    sa.Column('zip', sa.String(length=10), nullable=False),
    sa.Column('tier', sa.String(length=8), nullable=False),
    sa.Column('raised_tier', sa.String(length=8), nullable=True),
    sa.Column('coordinator_id', sa.String(length=64), nullable=False),
    sa.Column('program', sa.String(length=80), nullable=False),
    sa.Column('opted_out', sa.Boolean(), nullable=False),
    sa.Column('enrolled_from', sa.Date(), nullable=True),
    sa.Column('enrolled_to', sa.Date(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_members'))
    )
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.create_index('ix_members_birth_date', ['birth_date'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('topic', sa.String(length=80), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_unpublished', ['published_at', 'id'], unique=False)

    op.create_table('processed_events',
    sa.Column('event_id', sa.String(length=400), nullable=False),
    sa.Column('message_id', sa.BigInteger(), nullable=False),
    sa.Column('facility', sa.String(length=180), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_processed_events'))
    )
    op.create_table('staff',
    sa.Column('staff_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=160), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('team', sa.String(length=80), nullable=False),
    sa.Column('supervisor_id', sa.String(length=64), nullable=False),
    sa.Column('backup_id', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('webhook_url', sa.String(length=500), nullable=False),
    sa.Column('away_from', sa.Date(), nullable=True),
    sa.Column('away_to', sa.Date(), nullable=True),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('staff_id', name=op.f('pk_staff'))
    )


def downgrade() -> None:
    for table in ("staff", "processed_events", "outbox", "members", "member_identifiers",
                  "match_reviews", "leases", "episodes", "episode_visits", "episode_timeline",
                  "episode_flags"):
        op.drop_table(table)
