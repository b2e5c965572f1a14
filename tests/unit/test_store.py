"""Store contract: written once, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from spinlet.domain import (
    Execution,
    ExecutionStatus,
    Function,
    Package,
    Runtime,
    utcnow,
)
from spinlet.errors import AlreadyExists, ExecutionIdTaken, NotFound
from spinlet.queries import ExecutionQuery, Filter
from spinlet.store import Store

PACKAGE = Package(sha256="a" * 64, md5sum="b" * 32, size=10)


async def make_runtime(store: Store, name: str = "python3") -> Runtime:
    return await store.runtimes.create(Runtime(id=str(uuid.uuid4()), name=name, image="img:1"))


async def make_function(store: Store, name: str = "hello", **fields: object) -> Function:
    runtime = await store.runtimes.find("default", "python3") or await make_runtime(store)
    function = Function(
        id=str(uuid.uuid4()), name=name, runtime_id=runtime.id, package=PACKAGE, **fields
    )
    return await store.functions.create(function)


async def test_runtime_by_id_or_name_and_unique_name(store: Store) -> None:
    runtime = await make_runtime(store)
    assert (await store.runtimes.get("default", runtime.id)).name == "python3"
    assert (await store.runtimes.get("default", "python3")).id == runtime.id
    with pytest.raises(AlreadyExists, match="python3"):
        await make_runtime(store)
    with pytest.raises(NotFound):
        await store.runtimes.get("default", "nope")


async def test_function_round_trip_and_update(store: Store) -> None:
    function = await make_function(store, timeout=5.0, description="hi")
    loaded = await store.functions.get("default", "hello")
    assert loaded.id == function.id
    assert loaded.package == PACKAGE
    assert loaded.timeout == 5.0
    assert loaded.created_at == function.created_at
    assert loaded.created_at.tzinfo is not None
    updated = await store.functions.update(loaded.evolve(description="changed", cpu=500))
    again = await store.functions.get("default", function.id)
    assert again.description == "changed" and again.cpu == 500
    assert again.updated_at is not None and updated.updated_at is not None


async def test_functions_are_scoped_to_their_project(store: Store) -> None:
    await store.projects.ensure("other", "other")
    function = await make_function(store)
    assert await store.functions.find("other", function.id) is None
    assert await store.functions.list("other") == []


async def test_package_dropped_only_when_unreferenced(store: Store) -> None:
    first = await make_function(store, "one")
    await make_function(store, "two")
    assert not await store.functions.drop_package_if_unused(PACKAGE.sha256)
    await store.functions.delete(first)
    await store.functions.delete(await store.functions.get("default", "two"))
    assert await store.functions.drop_package_if_unused(PACKAGE.sha256)


async def test_runtime_in_use(store: Store) -> None:
    function = await make_function(store)
    assert await store.runtimes.in_use(function.runtime_id)
    await store.functions.delete(function)
    assert not await store.runtimes.in_use(function.runtime_id)


def _execution(function: Function, **fields: object) -> Execution:
    return Execution(
        id=str(uuid.uuid4()),
        function_id=function.id,
        function_name=function.name,
        **fields,  # type: ignore[arg-type]
    )


async def test_execution_output_kept_apart_and_round_trips(store: Store) -> None:
    function = await make_function(store)
    execution = await store.executions.create(
        _execution(function, status=ExecutionStatus.RUNNING, node_id="n", input={"name": "Ada"})
    )
    assert (await store.executions.logs("default", execution.id)) == ""
    done = execution.evolve(
        status=ExecutionStatus.SUCCESS, result={"greeting": "hi"}, duration_ms=1.5
    )
    assert await store.executions.finish(done, logs="printed\n")
    loaded = await store.executions.get("default", execution.id)
    assert loaded.status is ExecutionStatus.SUCCESS
    assert loaded.result == {"greeting": "hi"}
    assert loaded.input == {"name": "Ada"}
    assert await store.executions.logs("default", execution.id) == "printed\n"
    listed = await store.executions.list(ExecutionQuery(project_id="default"))
    assert [e.id for e in listed] == [execution.id]
    assert listed[0].result is None  # results only when asked for


async def test_execution_list_filters_and_keyset_paging(store: Store) -> None:
    function = await make_function(store)
    other = await make_function(store, "other")
    start = utcnow()
    ids = []
    for i in range(7):
        status = ExecutionStatus.SUCCESS if i % 2 else ExecutionStatus.FAILED
        execution = _execution(function, status=status, created_at=start + timedelta(seconds=i))
        ids.append((await store.executions.create(execution)).id)
    # Two executions with the same timestamp: ties are broken by id.
    same = start + timedelta(seconds=3)
    ids.append((await store.executions.create(_execution(function, created_at=same))).id)
    await store.executions.create(_execution(other, status=ExecutionStatus.SUCCESS))

    seen: list[str] = []
    marker = None
    while True:
        page = await store.executions.list(
            ExecutionQuery(project_id="default", function_id=function.id, limit=3, marker=marker)
        )
        seen += [e.id for e in page]
        if len(page) < 3:
            break
        marker = page[-1].id
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 8

    failed = await store.executions.list(
        ExecutionQuery(
            project_id="default", function_id=function.id, statuses=(ExecutionStatus.FAILED,)
        )
    )
    assert [e.created_at for e in failed] == sorted((e.created_at for e in failed), reverse=True)
    assert {e.status for e in failed} == {ExecutionStatus.FAILED} and len(failed) == 4


async def test_filters_treat_a_missing_value_as_unequal_and_has_ignores_case(
    store: Store,
) -> None:
    function = await make_function(store)
    live = await store.executions.create(
        _execution(function, function_alias="live", description="Nightly Report")
    )
    plain = await store.executions.create(_execution(function, description="ad hoc"))

    async def ids(*filters: Filter) -> set[str]:
        query = ExecutionQuery(project_id="default", filters=filters)
        return {e.id for e in await store.executions.list(query)}

    assert await ids(Filter("function_alias", "neq", "live")) == {plain.id}
    assert await ids(Filter("function_alias", "nin", ["live", "canary"])) == {plain.id}
    assert await ids(Filter("function_alias", "eq", None)) == {plain.id}
    assert await ids(Filter("function_alias", "neq", None)) == {live.id}
    assert await ids(Filter("description", "has", "REPORT")) == {live.id}
    assert await ids(Filter("description", "has", "_")) == set()  # no wildcard


async def test_execution_delete_and_scope(store: Store) -> None:
    function = await make_function(store)
    execution = await store.executions.create(_execution(function))
    with pytest.raises(NotFound):
        await store.executions.get("other", execution.id)
    with pytest.raises(NotFound):
        await store.executions.delete("other", execution.id)
    await store.executions.delete("default", execution.id)
    with pytest.raises(NotFound):
        await store.executions.get("default", execution.id)


async def test_a_client_id_taken_in_another_project_is_a_conflict(store: Store) -> None:
    function = await make_function(store)
    theirs = await store.executions.create(_execution(function, input={"secret": 1}))
    await store.projects.ensure("other", "other")
    mine = _execution(function, project_id="other", input=2).evolve(id=theirs.id)
    with pytest.raises(ExecutionIdTaken) as raised:
        await store.executions.create_once(mine)
    assert raised.value.status == 409
    assert "secret" not in raised.value.message and raised.value.details == {}
    assert await store.executions.find("other", theirs.id) is None
    again, created = await store.executions.create_once(theirs)  # the owner's retry
    assert (again.input, created) == ({"secret": 1}, False)


async def test_executions_survive_their_function(store: Store) -> None:
    function = await make_function(store)
    execution = await store.executions.create(_execution(function))
    await store.functions.delete(function)
    assert (await store.executions.get("default", execution.id)).function_name == "hello"


async def test_nodes_heartbeat_and_an_orphan_is_recovered_once(store: Store) -> None:
    function = await make_function(store)
    start = utcnow()
    await store.nodes.heartbeat("alive", start)
    await store.nodes.heartbeat("dead", start - timedelta(seconds=60))
    await store.nodes.heartbeat("alive", start + timedelta(seconds=1))  # beats again
    assert await store.nodes.alive(start - timedelta(seconds=10)) == ["alive"]
    running = {"status": ExecutionStatus.RUNNING, "attempts": 1}
    mine = await store.executions.create(_execution(function, node_id="alive", **running))
    orphan = await store.executions.create(_execution(function, node_id="dead", **running))
    assert [e.id for e in await store.executions.orphaned({"alive"})] == [orphan.id]
    # Two survivors race: one recovers it, the other finds it recovered.
    assert await store.executions.recover(orphan, retry=False)
    assert not await store.executions.recover(orphan, retry=True)
    lost = await store.executions.get("default", orphan.id)
    assert (lost.status, lost.status_reason) == (ExecutionStatus.ERROR, "lost")
    assert await store.executions.logs("default", orphan.id) == ""
    # The "dead" node was only out of touch: the end it reports later does not overwrite.
    late = orphan.evolve(status=ExecutionStatus.SUCCESS, result="late")
    assert not await store.executions.finish(late, logs="late")
    still = await store.executions.get("default", orphan.id)
    assert (still.status, still.result) == (ExecutionStatus.ERROR, None)
    assert await store.executions.logs("default", orphan.id) == ""
    assert await store.executions.recover(mine, retry=True)
    requeued = await store.executions.get("default", mine.id)
    assert (requeued.status, requeued.node_id) == (ExecutionStatus.QUEUED, None)
    assert await store.executions.orphaned({"alive"}) == []
