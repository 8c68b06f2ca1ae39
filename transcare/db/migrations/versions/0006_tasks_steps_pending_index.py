"""tasks: the scheduler's index holds only the tasks with a ladder step still to fire

``ix_tasks_next_step_at`` was (next_step_at) over every task. The scheduler's claim (``next_step_at
<= now`` among active tasks, in (next_step_at, id) order, up to a limit) becomes a read of
``ix_tasks_steps_pending``: (next_step_at, id) of the active tasks with a step to fire, in the
claim's order, so a plan needs no statistics to be right.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_STEPS_PENDING = sa.text("next_step_at IS NOT NULL AND status IN ('open', 'claimed')")


def upgrade() -> None:
    op.drop_index("ix_tasks_next_step_at", table_name="tasks")
    op.create_index("ix_tasks_steps_pending", "tasks", ["next_step_at", "id"], unique=False,
                    sqlite_where=_STEPS_PENDING, postgresql_where=_STEPS_PENDING)


def downgrade() -> None:
    op.drop_index("ix_tasks_steps_pending", table_name="tasks")
    op.create_index("ix_tasks_next_step_at", "tasks", ["next_step_at"], unique=False)
