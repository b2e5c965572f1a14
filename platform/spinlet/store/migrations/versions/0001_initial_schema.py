"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 08:16:02.383760
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "packages",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("md5sum", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_packages")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    op.create_table(
        "executions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("function_name", sa.String(length=255), nullable=False),
        sa.Column("function_version", sa.Integer(), nullable=False),
        sa.Column("function_alias", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=64), nullable=True),
        sa.Column("sync", sa.Boolean(), nullable=False),
        sa.Column("input", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("start_kind", sa.String(length=8), nullable=True),
        sa.Column("init_ms", sa.Float(), nullable=True),
        sa.Column("image_id", sa.String(length=128), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("expired", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_executions_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executions")),
    )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_executions_project_id_created_at_id"),
            ["project_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_executions_project_id_function_id_status_created_at_id"),
            ["project_id", "function_id", "status", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_executions_status"), ["status"], unique=False)

    op.create_table(
        "runtimes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_runtimes_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runtimes")),
    )
    with op.batch_alter_table("runtimes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_runtimes_project_id_name"), ["project_id", "name"], unique=True
        )

    op.create_table(
        "execution_outputs",
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("logs", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_execution_outputs_execution_id_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("execution_id", name=op.f("pk_execution_outputs")),
    )
    op.create_table(
        "functions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("runtime_id", sa.String(length=36), nullable=False),
        sa.Column("entry", sa.String(length=255), nullable=False),
        sa.Column("package_sha256", sa.String(length=64), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("memory_size", sa.Integer(), nullable=False),
        sa.Column("cpu", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["package_sha256"],
            ["packages.sha256"],
            name=op.f("fk_functions_package_sha256_packages"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_functions_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["runtime_id"], ["runtimes.id"], name=op.f("fk_functions_runtime_id_runtimes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_functions")),
    )
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_functions_project_id_name"), ["project_id", "name"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_functions_project_id_name"))

    op.drop_table("functions")
    op.drop_table("execution_outputs")
    with op.batch_alter_table("runtimes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runtimes_project_id_name"))

    op.drop_table("runtimes")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_executions_status"))
        batch_op.drop_index(batch_op.f("ix_executions_project_id_function_id_status_created_at_id"))
        batch_op.drop_index(batch_op.f("ix_executions_project_id_created_at_id"))

    op.drop_table("executions")
    op.drop_table("projects")
    op.drop_table("packages")
