"""The migrations produce exactly the schema the code declares, on both stores."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from spinlet.domain import FunctionStatus
from spinlet.store import Database, Store
from spinlet.store.database import alembic_config
from spinlet.store.tables import metadata
from tests.unit.test_store import make_function


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


async def test_a_function_that_was_creating_is_building_after_the_upgrade(store: Store) -> None:
    function = await make_function(store)

    def step(connection: Connection, revision: str) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        if revision == "head":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)

    async with store.db.transaction() as conn:
        await conn.run_sync(step, "0008")  # the schema before the function states were fixed
        await conn.execute(
            text("UPDATE functions SET status = 'creating' WHERE id = :id"), {"id": function.id}
        )
        await conn.run_sync(step, "head")
    assert (await store.functions.get("default", function.id)).status is FunctionStatus.BUILDING
