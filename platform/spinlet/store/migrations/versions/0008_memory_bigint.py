"""memory sizes as 64-bit integers (a function may have more than 2 GiB)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("functions", "function_versions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "memory_size",
                existing_type=sa.Integer(),
                type_=sa.BigInteger(),
                existing_nullable=False,
            )


def downgrade() -> None:
    for table in ("function_versions", "functions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "memory_size",
                existing_type=sa.BigInteger(),
                type_=sa.Integer(),
                existing_nullable=False,
            )
