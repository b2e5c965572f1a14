"""dependency layers: a function's requirements and build, versions' pins, builds and layers

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requirements", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("build_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("layer_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("status_message", sa.Text(), nullable=True))
        batch_op.create_index("ix_functions_build_key", ["build_key"], unique=False)
    with op.batch_alter_table("function_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("layer_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("dependencies", sa.JSON(), nullable=True))
    op.create_table(
        "layer_builds",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("runtime_id", sa.String(length=36), nullable=False),
        sa.Column("requirements", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("layer_id", sa.String(length=64), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_layer_builds")),
    )
    op.create_index(
        "ix_layer_builds_status_created_at", "layer_builds", ["status", "created_at"], unique=False
    )
    op.create_table(
        "layers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("dependencies", sa.JSON(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("archive_size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_layers")),
    )
    op.create_table(
        "layer_chunks",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("layer_id", "seq", name=op.f("pk_layer_chunks")),
    )


def downgrade() -> None:
    op.drop_table("layer_chunks")
    op.drop_table("layers")
    op.drop_index("ix_layer_builds_status_created_at", table_name="layer_builds")
    op.drop_table("layer_builds")
    with op.batch_alter_table("function_versions", schema=None) as batch_op:
        batch_op.drop_column("dependencies")
        batch_op.drop_column("layer_id")
    with op.batch_alter_table("functions", schema=None) as batch_op:
        batch_op.drop_index("ix_functions_build_key")
        batch_op.drop_column("status_message")
        batch_op.drop_column("layer_id")
        batch_op.drop_column("build_key")
        batch_op.drop_column("requirements")
