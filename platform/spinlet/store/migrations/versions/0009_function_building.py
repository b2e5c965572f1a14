"""a function being prepared is `building` (was `creating`)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_functions = sa.table("functions", sa.column("status", sa.String(16)))


def _rename(old: str, new: str) -> None:
    op.execute(_functions.update().where(_functions.c.status == old).values(status=new))


def upgrade() -> None:
    _rename("creating", "building")


def downgrade() -> None:
    _rename("building", "creating")
