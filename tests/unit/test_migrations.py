"""The migrations produce exactly the schema the code declares, on both stores."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from spinlet.domain import Execution, ExecutionStatus, FunctionStatus, utcnow
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


def step(connection: Connection, revision: str) -> None:
    """Move the schema up to the newest revision ("head") or down to `revision`."""
    config = alembic_config()
    config.attributes["connection"] = connection
    if revision == "head":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def schema(connection: Connection) -> dict[str, set[str]]:
    """The tables of the database and their columns."""
    inspector = inspect(connection)
    return {
        table: {c["name"] for c in inspector.get_columns(table)}
        for table in inspector.get_table_names()
    }


async def test_a_function_that_was_creating_is_building_after_the_upgrade(store: Store) -> None:
    function = await make_function(store)

    async with store.db.transaction() as conn:
        await conn.run_sync(step, "0008")  # the schema before the function states were fixed
        await conn.execute(
            text("UPDATE functions SET status = 'creating' WHERE id = :id"), {"id": function.id}
        )
        await conn.run_sync(step, "head")
    assert (await store.functions.get("default", function.id)).status is FunctionStatus.BUILDING


async def test_dependency_layers_upgrade_a_database_with_functions_and_downgrade(
    store: Store,
) -> None:
    function = await make_function(store)
    async with store.db.transaction() as conn:
        await conn.run_sync(step, "0009")  # the schema before dependency layers
        before = await conn.run_sync(schema)
        assert "layers" not in before and "build_key" not in before["functions"]
        await conn.run_sync(step, "head")
    upgraded = await store.functions.get("default", function.id)
    assert (upgraded.status, upgraded.requirements, upgraded.build_key) == (
        FunctionStatus.AVAILABLE,
        None,
        None,
    )
    assert (upgraded.layer_id, upgraded.status_message, upgraded.dependencies) == (None, None, ())

    layered = await make_function(store, "layered", requirements="pyyaml", build_key="1" * 64)
    async with store.db.transaction() as conn:
        await conn.run_sync(step, "0009")
        after = await conn.run_sync(schema)
        names = (await conn.execute(text("SELECT name FROM functions ORDER BY name"))).scalars()
        assert list(names) == ["hello", "layered"]
        await conn.run_sync(step, "head")
    assert after.keys() == before.keys() and after["functions"] == before["functions"]
    assert after["function_versions"] == before["function_versions"]
    assert (await store.functions.get("default", layered.id)).build_key is None


async def test_executions_keep_their_container_across_the_upgrade_and_downgrade(
    store: Store,
) -> None:
    function = await make_function(store)
    running = Execution(
        id="e-0011",
        function_id=function.id,
        function_name=function.name,
        status=ExecutionStatus.RUNNING,
        node_id="n",
    )
    await store.executions.create(running)
    async with store.db.transaction() as conn:
        await conn.run_sync(step, "0010")  # the schema before executions kept their container
        before = await conn.run_sync(schema)
        assert "container_id" not in before["executions"]
        await conn.run_sync(step, "head")
    upgraded = await store.executions.get("default", running.id)
    assert (upgraded.status, upgraded.container_id) == (ExecutionStatus.RUNNING, None)

    ended = running.evolve(status=ExecutionStatus.SUCCESS, container_id="c" * 64)
    assert await store.executions.finish(ended, logs="")
    assert (await store.executions.get("default", running.id)).container_id == "c" * 64
    async with store.db.transaction() as conn:
        await conn.run_sync(step, "0010")
        assert await conn.run_sync(schema) == before
        status = await conn.execute(text("SELECT status FROM executions WHERE id = 'e-0011'"))
        assert status.scalar_one() == "success"
        await conn.run_sync(step, "head")


async def test_functions_and_nodes_upgrade_to_workers_and_downgrade(store: Store) -> None:
    function = await make_function(store)
    async with store.db.transaction() as conn:
        await conn.run_sync(step, "0011")  # the schema before workers were published
        before = await conn.run_sync(schema)
        assert "provisioned" not in before["functions"] and "report" not in before["nodes"]
        await conn.run_sync(step, "head")
    assert await store.scaling.count("default", function.id) == 0  # none kept: as before
    assert await store.scaling.scale("default", function.id, 2) == 2
    await store.nodes.heartbeat("n", utcnow(), {"workers": []})
    async with store.db.transaction() as conn:
        await conn.run_sync(step, "0011")
        assert await conn.run_sync(schema) == before
        await conn.run_sync(step, "head")
    assert await store.scaling.count("default", function.id) == 0
