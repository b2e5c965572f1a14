"""webhooks: URLs that run a function without a token; executions record their webhook

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("function_alias", sa.String(length=255), nullable=True),
        sa.Column("function_version", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["function_id"], ["functions.id"], name="fk_webhooks_function_id_functions"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_webhooks_project_id_projects"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhooks"),
        sa.UniqueConstraint("secret_sha256", name="uq_webhooks_secret_sha256"),
    )
    op.create_index(
        "ix_webhooks_project_id_created_at", "webhooks", ["project_id", "created_at"], unique=False
    )
    op.create_index("ix_webhooks_function_id", "webhooks", ["function_id"], unique=False)
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_id", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_executions_webhook_id", ["webhook_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_webhook_id")
        batch_op.drop_column("webhook_id")
    op.drop_index("ix_webhooks_function_id", table_name="webhooks")
    op.drop_index("ix_webhooks_project_id_created_at", table_name="webhooks")
    op.drop_table("webhooks")
