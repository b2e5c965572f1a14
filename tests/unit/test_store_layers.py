"""Store contract for dependency layers (builds, layers in chunks, the functions and versions
that use them): written once, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta

import pytest
from sqlalchemy import text

from spinlet.domain import (
    Execution,
    ExecutionStatus,
    Function,
    FunctionStatus,
    Layer,
    utcnow,
)
from spinlet.errors import FunctionNotReady, LayerBuildFailed, NotFound
from spinlet.services.versions import snapshot
from spinlet.store import Store
from spinlet.store.tables import layer_chunks, layers
from tests.unit.test_store import make_function

S = FunctionStatus
KEY, OTHER_KEY = "1" * 64, "2" * 64
REQUIREMENTS = "pyyaml==6.0.2"
PINS = ("orjson==3.10.7", "pyyaml==6.0.2")
IMAGE = "sha256:" + "1" * 64


def layer(layer_id: str = "f" * 64, *parts: bytes) -> Layer:
    archive = b"".join(parts or (b"archive",))
    return Layer(
        id=layer_id,
        target="cp311-cp311-manylinux_2_36_x86_64",
        dependencies=PINS,
        size=4096,
        archive_sha256=hashlib.sha256(archive).hexdigest(),
        archive_size=len(archive),
        chunks=len(parts) or 1,
    )


async def stream(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def never() -> AsyncIterator[bytes]:
    raise AssertionError("the chunks of a stored layer were read again")
    yield b""  # an async generator


async def read_all(store: Store, layer_id: str) -> list[bytes]:
    return [chunk async for chunk in store.layers.chunks(layer_id)]


async def needing(store: Store, key: str = KEY, name: str = "hello") -> Function:
    """A function whose requirements are resolved by the build `key`."""
    return await make_function(store, name, requirements=REQUIREMENTS, build_key=key)


async def sql(store: Store, statement: str, **params: object) -> list[tuple[object, ...]]:
    async with store.db.transaction() as conn:
        result = await conn.execute(text(statement), params)
        return [tuple(row) for row in result] if result.returns_rows else []


async def built(store: Store, key: str = KEY, the_layer: Layer | None = None) -> Layer:
    """Claim the build `key`, store a layer for it and finish it."""
    the_layer = the_layer or layer()
    claimed = await store.layers.claim_build("builder", 60)
    assert claimed is not None and claimed.key == key
    await store.layers.save_layer(the_layer, stream([b"archive"]))
    assert await store.layers.finish_build(key, "builder", the_layer.id)
    return the_layer


# --- builds ------------------------------------------------------------------------------


async def test_a_request_makes_the_build_once_and_a_new_request_retries_a_failed_one(
    store: Store,
) -> None:
    first = await store.layers.request_build(KEY, "runtime", REQUIREMENTS)
    assert (first.status, first.owner, first.attempts, first.message) == (S.BUILDING, None, 0, None)
    again = await store.layers.request_build(KEY, "runtime", REQUIREMENTS)
    assert (again.status, again.created_at) == (S.BUILDING, first.created_at)
    assert await store.layers.find_build(OTHER_KEY) is None

    claimed = await store.layers.claim_build("node-a", 60)
    assert claimed is not None and (claimed.owner, claimed.attempts) == ("node-a", 1)
    # While it is building (and held), a new request changes nothing.
    assert (await store.layers.request_build(KEY, "runtime", REQUIREMENTS)).owner == "node-a"
    assert await store.layers.fail_build(KEY, "node-a", "No matching distribution for pyyaml")
    failed = await store.layers.find_build(KEY)
    assert failed is not None
    assert (failed.status, failed.message) == (S.ERROR, "No matching distribution for pyyaml")

    retried = await store.layers.request_build(KEY, "runtime", REQUIREMENTS)
    assert (retried.status, retried.owner, retried.message) == (S.BUILDING, None, None)
    assert (await store.layers.claim_build("node-b", 60)) is not None  # free to take again


async def test_two_nodes_claiming_at_once_never_get_the_same_build(
    store: Store, database_url: str
) -> None:
    other_node = await Store.open(database_url)
    try:
        await store.layers.request_build(KEY, "runtime", REQUIREMENTS)
        await store.layers.request_build(OTHER_KEY, "runtime", "orjson")
        claims = await asyncio.gather(
            store.layers.claim_build("node-a", 60),
            other_node.layers.claim_build("node-b", 60),
            store.layers.claim_build("node-c", 60),
        )
        got = [claim for claim in claims if claim is not None]
        assert sorted(claim.key for claim in got) == [KEY, OTHER_KEY]
        assert len({claim.owner for claim in got}) == 2
        assert await other_node.layers.claim_build("node-d", 60) is None
    finally:
        await other_node.close()


async def test_a_lapsed_lease_lets_another_node_take_the_build_over(store: Store) -> None:
    await store.layers.request_build(KEY, "runtime", REQUIREMENTS)
    assert await store.layers.claim_build("node-a", 60) is not None
    assert await store.layers.claim_build("node-b", 60) is None  # held
    assert await store.layers.renew_build(KEY, "node-a", 60)
    assert await store.layers.claim_build("node-b", 60) is None  # renewed: still held
    assert not await store.layers.renew_build(KEY, "node-b", 60)  # not b's to renew

    # node-a stops renewing (it died): its lease lapses.
    past = utcnow() - timedelta(seconds=1)
    await sql(store, "UPDATE layer_builds SET lease_until = :past", past=past.replace(tzinfo=None))
    taken = await store.layers.claim_build("node-b", 60)
    assert taken is not None and (taken.key, taken.owner, taken.attempts) == (KEY, "node-b", 2)

    # node-a was only slow: whatever it reports now is refused.
    await store.layers.save_layer(layer(), stream([b"archive"]))
    assert not await store.layers.renew_build(KEY, "node-a", 60)
    assert not await store.layers.finish_build(KEY, "node-a", layer().id)
    assert not await store.layers.fail_build(KEY, "node-a", "late")
    still = await store.layers.find_build(KEY)
    assert still is not None and (still.status, still.owner) == (S.BUILDING, "node-b")


async def test_finishing_a_build_makes_its_building_functions_available(store: Store) -> None:
    one, two = await needing(store, name="one"), await needing(store, name="two")
    elsewhere = await needing(store, OTHER_KEY, name="elsewhere")
    foreign = await needing(store, name="foreign")
    # A newer node of the fleet put this one in a status this node does not know.
    await sql(store, "UPDATE functions SET status = 'frozen' WHERE id = :id", id=foreign.id)
    assert (one.status, one.layer_id, one.dependencies) == (S.BUILDING, None, ())

    stored = await built(store)
    for function in (one, two):
        now = await store.functions.get("default", function.id)
        assert (now.status, now.layer_id, now.dependencies) == (S.AVAILABLE, stored.id, PINS)
        assert now.status_message is None
    assert (await store.functions.get("default", elsewhere.id)).status is S.BUILDING
    assert await sql(store, "SELECT status FROM functions WHERE id = :id", id=foreign.id) == [
        ("frozen",)
    ]
    build = await store.layers.find_build(KEY)
    assert build is not None and (build.status, build.layer_id) == (S.AVAILABLE, stored.id)
    assert not await store.layers.finish_build(KEY, "builder", stored.id)  # not building now

    # A function asking for the same requirements later is available at once: one build.
    late = await needing(store, name="late")
    assert (late.status, late.layer_id, late.dependencies) == (S.AVAILABLE, stored.id, PINS)


async def test_a_build_is_finished_only_with_a_stored_layer(store: Store) -> None:
    await needing(store)
    assert await store.layers.claim_build("builder", 60) is not None
    with pytest.raises(NotFound, match="not stored"):
        await store.layers.finish_build(KEY, "builder", "e" * 64)
    assert (await store.functions.get("default", "hello")).status is S.BUILDING


async def test_a_failed_build_shows_its_message_and_a_rebuild_starts_over(store: Store) -> None:
    function = await needing(store)
    other = await needing(store, OTHER_KEY, name="other")
    assert await store.layers.claim_build("builder", 60) is not None
    assert not await store.layers.rebuild(KEY)  # building already
    assert await store.layers.fail_build(KEY, "builder", "the package index could not be reached")
    failed = await store.functions.get("default", function.id)
    assert (failed.status, failed.status_message) == (
        S.ERROR,
        "the package index could not be reached",
    )
    assert (await store.functions.get("default", other.id)).status is S.BUILDING

    assert await store.layers.rebuild(KEY)
    again = await store.functions.get("default", function.id)
    assert (again.status, again.status_message) == (S.BUILDING, None)
    stored = await built(store)

    # A rebuild of a built layer: the functions keep running the layer they have meanwhile.
    assert await store.layers.rebuild(KEY)
    rebuilding = await store.functions.get("default", function.id)
    assert (rebuilding.status, rebuilding.layer_id, rebuilding.dependencies) == (
        S.BUILDING,
        stored.id,
        PINS,
    )
    assert not await store.layers.rebuild("9" * 64)  # no such build


# --- layers in chunks --------------------------------------------------------------------


async def test_a_layer_is_stored_and_read_back_one_chunk_at_a_time(store: Store) -> None:
    parts = [b"first chunk", b"second", b"third and last"]
    written: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            # Each chunk is in the store before the next one is asked for.
            count = await sql(store, "SELECT count(*) FROM layer_chunks")
            written.append(int(str(count[0][0])))
            yield part

    the_layer = layer("f" * 64, *parts)
    await store.layers.save_layer(the_layer, chunks())
    assert written == [0, 1, 2]
    found = await store.layers.find_layer(the_layer.id)
    assert found is not None
    assert (found.dependencies, found.archive_size, found.chunks) == (PINS, 31, 3)
    assert await read_all(store, the_layer.id) == parts

    # Reading asks for one chunk at a time: a chunk gone after the first one was read is missed.
    reader = store.layers.chunks(the_layer.id)
    assert await anext(reader) == b"first chunk"
    await sql(store, "DELETE FROM layer_chunks WHERE seq = 1")
    with pytest.raises(NotFound):
        await anext(reader)
    with pytest.raises(NotFound):
        await read_all(store, "e" * 64)


async def test_saving_a_stored_layer_again_reads_nothing(store: Store) -> None:
    the_layer = layer("f" * 64, b"one", b"two")
    await store.layers.save_layer(the_layer, stream([b"one", b"two"]))
    await store.layers.save_layer(the_layer, never())
    assert await read_all(store, the_layer.id) == [b"one", b"two"]


async def test_an_upload_a_dead_builder_left_is_replaced(store: Store) -> None:
    the_layer = layer("f" * 64, b"new")
    long_ago = (utcnow() - timedelta(hours=2)).replace(tzinfo=None)
    async with store.db.transaction() as conn:
        values = dataclasses.asdict(the_layer) | {"complete": False, "created_at": long_ago}
        values["dependencies"] = list(PINS)
        await conn.execute(layers.insert().values(**values))
        for seq in (0, 5):
            await conn.execute(
                layer_chunks.insert().values(layer_id=the_layer.id, seq=seq, data=b"x")
            )
    assert await store.layers.find_layer(the_layer.id) is None  # incomplete: not a layer yet
    await store.layers.save_layer(the_layer, stream([b"new"]))
    assert await read_all(store, the_layer.id) == [b"new"]
    assert await sql(store, "SELECT seq FROM layer_chunks") == [(0,)]


async def test_a_failed_upload_leaves_nothing_behind(store: Store) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"one"
        raise OSError("disk gone")

    the_layer = layer("f" * 64, b"one", b"two")
    with pytest.raises(OSError, match="disk gone"):
        await store.layers.save_layer(the_layer, broken())
    assert await sql(store, "SELECT count(*) FROM layers") == [(0,)]
    with pytest.raises(LayerBuildFailed, match="3 bytes were stored, the archive has 6"):
        await store.layers.save_layer(the_layer, stream([b"one"]))
    await store.layers.save_layer(the_layer, stream([b"one", b"two"]))  # not waiting for one
    assert await read_all(store, the_layer.id) == [b"one", b"two"]


async def test_a_layer_another_builder_is_storing_is_waited_for(store: Store) -> None:
    store.layers.poll_interval = 0.01
    the_layer = layer("f" * 64, b"one", b"two")
    halfway, go_on = asyncio.Event(), asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"one"
        halfway.set()
        await go_on.wait()
        yield b"two"

    first = asyncio.create_task(store.layers.save_layer(the_layer, slow()))
    await halfway.wait()
    second = asyncio.create_task(store.layers.save_layer(the_layer, never()))
    await asyncio.sleep(0.05)  # let the second one find the upload in progress
    assert not second.done()
    go_on.set()
    await asyncio.gather(first, second)
    assert await read_all(store, the_layer.id) == [b"one", b"two"]


async def test_unused_builds_and_layers_are_dropped_pinned_ones_kept(store: Store) -> None:
    pinned, current, loose = layer("a" * 64), layer("b" * 64), layer("c" * 64)
    function = await needing(store)
    await built(store, KEY, pinned)
    function = await store.functions.get("default", function.id)
    version, _ = await store.versions.publish(
        dataclasses.replace(snapshot(function, IMAGE), layer_id=pinned.id, dependencies=PINS)
    )
    # New requirements: a new build and layer; the old build is no longer used.
    function = await store.functions.update(function.evolve(build_key=OTHER_KEY))
    await built(store, OTHER_KEY, current)
    await store.layers.save_layer(loose, stream([b"archive"]))

    assert await store.layers.drop_unused() == []  # all too recent to tell
    assert await store.layers.find_build(KEY) is not None  # asked for a moment ago
    assert await store.layers.drop_unused(grace=timedelta(0)) == [loose.id]
    assert await store.layers.find_build(KEY) is None
    assert await store.layers.find_layer(pinned.id) is not None  # the version pins it
    assert await read_all(store, current.id) == [b"archive"]

    await store.versions.delete(function, version.number)
    await store.functions.delete(function)
    dropped = await store.layers.drop_unused(grace=timedelta(0))
    assert dropped == sorted([pinned.id, current.id])
    assert await sql(store, "SELECT count(*) FROM layer_chunks") == [(0,)]
    assert await store.layers.find_build(OTHER_KEY) is None


# --- functions and versions --------------------------------------------------------------


async def test_a_function_keeps_its_requirements_build_and_layer(store: Store) -> None:
    function = await needing(store)
    assert (function.requirements, function.build_key) == (REQUIREMENTS, KEY)
    build = await store.layers.find_build(KEY)  # made with the function when missing
    assert build is not None and (build.requirements, build.runtime_id) == (
        REQUIREMENTS,
        function.runtime_id,
    )
    stored = await built(store)
    listed = {f.name: f for f in await store.functions.list("default")}
    assert (listed["hello"].layer_id, listed["hello"].dependencies) == (stored.id, PINS)
    found = await store.functions.find_with_image("default", "hello")
    assert found is not None and found[0].dependencies == PINS

    # A stale copy (read while it was building) does not put it back to building.
    updated = await store.functions.update(function.evolve(description="changed"))
    assert (updated.status, updated.layer_id, updated.description) == (
        S.AVAILABLE,
        stored.id,
        "changed",
    )
    # New requirements whose build failed already: error, with the build's message.
    await store.layers.request_build(OTHER_KEY, function.runtime_id, "nope")
    assert await store.layers.claim_build("builder", 60) is not None
    assert await store.layers.fail_build(OTHER_KEY, "builder", "no such package: nope")
    failing = await store.functions.update(updated.evolve(requirements="nope", build_key=OTHER_KEY))
    assert (failing.status, failing.status_message) == (S.ERROR, "no such package: nope")
    # No requirements any more: available, without a layer.
    plain = await store.functions.update(failing.evolve(requirements=None, build_key=None))
    assert (plain.status, plain.layer_id, plain.status_message, plain.dependencies) == (
        S.AVAILABLE,
        None,
        None,
        (),
    )


async def test_a_version_pins_its_layer_and_is_not_published_while_building(
    store: Store,
) -> None:
    function = await needing(store)
    with pytest.raises(FunctionNotReady, match="building"):
        await store.versions.publish(snapshot(function, IMAGE))
    stored = await built(store)
    function = await store.functions.get("default", function.id)
    pinned = dataclasses.replace(snapshot(function, IMAGE), layer_id=stored.id, dependencies=PINS)
    version, created = await store.versions.publish(pinned)
    assert created
    found = await store.versions.find("default", function.id, version.number)
    assert found is not None and (found.layer_id, found.dependencies) == (stored.id, PINS)
    plain = await make_function(store, "plain")
    bare, _ = await store.versions.publish(snapshot(plain, IMAGE))
    listed = await store.versions.list("default", plain.id)
    assert [(v.layer_id, v.dependencies) for v in listed] == [(None, ())] and bare.layer_id is None


async def test_queued_executions_of_a_building_function_wait_for_its_layer(store: Store) -> None:
    function = await needing(store)
    other = await make_function(store, "other")

    def execution(of: Function, version: int, seconds: int) -> Execution:
        return Execution(
            id=f"{of.name}-{version}",
            function_id=of.id,
            function_name=of.name,
            function_version=version,
            sync=False,
            created_at=utcnow() + timedelta(seconds=seconds),
        )

    current = await store.executions.create(execution(function, 0, 0))
    pinned = await store.executions.create(execution(function, 1, 1))
    unrelated = await store.executions.create(execution(other, 0, 2))
    claimed = [await store.executions.claim_next("node") for _ in range(3)]
    assert [c.id if c else None for c in claimed] == [pinned.id, unrelated.id, None]
    waiting = await store.executions.get("default", current.id)
    assert waiting.status is ExecutionStatus.QUEUED

    await built(store)
    now = await store.executions.claim_next("node")
    assert now is not None and (now.id, now.status) == (current.id, ExecutionStatus.RUNNING)
