"""follow-up tasks and notifications

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('notifications',
    sa.Column('id', sa.String(length=80), nullable=False),
    sa.Column('task_id', sa.String(length=40), nullable=False),
    sa.Column('recipient_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_notifications_recipient', ['recipient_id', 'channel', 'created_at'],
                              unique=False)

    op.create_table('planned_events',
    sa.Column('event_id', sa.String(length=400), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_planned_events'))
    )
    op.create_table('task_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.String(length=40), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=24), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_history'))
    )
    with op.batch_alter_table('task_history', schema=None) as batch_op:
        batch_op.create_index('ix_task_history_task_id', ['task_id', 'id'], unique=False)

    op.create_table('tasks',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('episode_id', sa.String(length=40), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('rule_id', sa.String(length=80), nullable=False),
    sa.Column('type', sa.String(length=60), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('assignee_id', sa.String(length=64), nullable=False),
    sa.Column('assignee_role', sa.String(length=20), nullable=False),
    sa.Column('assignment_reason', sa.String(length=200), nullable=False),
    sa.Column('priority', sa.String(length=8), nullable=False),
    sa.Column('clinical_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('escalation_level', sa.Integer(), nullable=False),
    sa.Column('next_step', sa.Integer(), nullable=False),
    sa.Column('next_step_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('opted_out', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('source_event_id', sa.String(length=400), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_assignee_status', ['assignee_id', 'status'], unique=False)
        batch_op.create_index('ix_tasks_episode_id', ['episode_id'], unique=False)
        batch_op.create_index('ix_tasks_next_step_at', ['next_step_at'], unique=False)
        batch_op.create_index('ix_tasks_status_due', ['status', 'due_at'], unique=False)


def downgrade() -> None:
    for table in ("notifications", "planned_events", "task_history", "tasks"):
        op.drop_table(table)
