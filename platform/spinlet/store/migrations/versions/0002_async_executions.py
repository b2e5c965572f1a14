"""async executions: retries, idempotency, cancellation, queue indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 08:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retries", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("cancel_requested", sa.String(length=16), nullable=True))
        batch_op.drop_index(batch_op.f("ix_executions_status"))
        batch_op.create_index(
            batch_op.f("ix_executions_status_created_at"), ["status", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_executions_finished_at"), ["finished_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_executions_finished_at"))
        batch_op.drop_index(batch_op.f("ix_executions_status_created_at"))
        batch_op.create_index(batch_op.f("ix_executions_status"), ["status"], unique=False)
        batch_op.drop_column("cancel_requested")
        batch_op.drop_column("attempts")
        batch_op.drop_column("request_hash")
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.drop_column("retries")
