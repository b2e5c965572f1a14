"""per-function concurrency and environment variables (kept in versions too)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("concurrency", sa.Integer(), server_default="10", nullable=False)
        )
        batch_op.add_column(
            sa.Column("environment", sa.JSON(), server_default="{}", nullable=False)
        )
    with op.batch_alter_table("function_versions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("environment", sa.JSON(), server_default="{}", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("function_versions", schema=None) as batch_op:
        batch_op.drop_column("environment")
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.drop_column("environment")
        batch_op.drop_column("concurrency")
