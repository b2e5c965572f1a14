"""Alembic environment: runs on a connection handed over by `Database.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from spinlet.store.tables import metadata

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through spinlet (Database.migrate), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
