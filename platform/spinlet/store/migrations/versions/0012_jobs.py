"""cron jobs, and the executions they fire or that wait for their schedule

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("function_version", sa.Integer(), nullable=False),
        sa.Column("function_alias", sa.String(length=255), nullable=True),
        sa.Column("function_input", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("pattern", sa.String(length=255), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("first_execution_time", sa.DateTime(), nullable=True),
        sa.Column("next_execution_time", sa.DateTime(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("skipped", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_execution_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_jobs_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_jobs_status_next_execution_time"),
            ["status", "next_execution_time"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_jobs_project_id_created_at"), ["project_id", "created_at"], unique=False
        )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("scheduled_at", sa.DateTime(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_executions_job_id_created_at"), ["job_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_executions_status_scheduled_at"),
            ["status", "scheduled_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_executions_status_scheduled_at"))
        batch_op.drop_index(batch_op.f("ix_executions_job_id_created_at"))
        batch_op.drop_column("scheduled_at")
        batch_op.drop_column("job_id")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_project_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_jobs_status_next_execution_time"))
    op.drop_table("jobs")
