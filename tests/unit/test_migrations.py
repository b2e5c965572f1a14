"""The migrations produce exactly the schema the code declares, on both stores."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from spinlet.store import Database
from spinlet.store.tables import metadata


async def test_migrations_match_the_models(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    await db.migrate()  # applying them again is a no-op

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with db.connect() as conn:
        assert await conn.run_sync(diff) == []
    await db.close()
