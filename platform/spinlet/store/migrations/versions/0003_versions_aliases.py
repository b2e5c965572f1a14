"""versions and aliases: function snapshots, a per-function version counter, named pointers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("latest_version", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "function_versions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("runtime_id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=128), nullable=False),
        sa.Column("entry", sa.String(length=255), nullable=False),
        sa.Column("package_sha256", sa.String(length=64), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("memory_size", sa.Integer(), nullable=False),
        sa.Column("cpu", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["function_id"],
            ["functions.id"],
            name=op.f("fk_function_versions_function_id_functions"),
        ),
        sa.ForeignKeyConstraint(
            ["package_sha256"],
            ["packages.sha256"],
            name=op.f("fk_function_versions_package_sha256_packages"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_function_versions_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["runtime_id"], ["runtimes.id"], name=op.f("fk_function_versions_runtime_id_runtimes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_function_versions")),
    )
    with op.batch_alter_table("function_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_function_versions_function_id_version_number"),
            ["function_id", "version_number"],
            unique=True,
        )
        batch_op.create_index(
            batch_op.f("ix_function_versions_package_sha256"), ["package_sha256"], unique=False
        )

    op.create_table(
        "aliases",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("function_version", sa.Integer(), nullable=False),
        sa.Column("routing_version", sa.Integer(), nullable=True),
        sa.Column("routing_weight", sa.Float(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["function_id"], ["functions.id"], name=op.f("fk_aliases_function_id_functions")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_aliases_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aliases")),
    )
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_aliases_function_id"), ["function_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_aliases_project_id_name"), ["project_id", "name"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_aliases_project_id_name"))
        batch_op.drop_index(batch_op.f("ix_aliases_function_id"))
    op.drop_table("aliases")
    with op.batch_alter_table("function_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_function_versions_package_sha256"))
        batch_op.drop_index(batch_op.f("ix_function_versions_function_id_version_number"))
    op.drop_table("function_versions")
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.drop_column("latest_version")
