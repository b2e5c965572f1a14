"""Store contract for versions and aliases: written once, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from spinlet.domain import Alias, Function, Package, Routing
from spinlet.errors import AlreadyExists, Conflict, Forbidden, NotFound
from spinlet.services.versions import snapshot
from spinlet.store import Store
from tests.unit.test_store import PACKAGE, make_function, make_runtime

OTHER_PACKAGE = Package(sha256="c" * 64, md5sum="d" * 32, size=20)
IMAGE = "sha256:" + "1" * 64


async def publish(store: Store, function: Function, image: str = IMAGE) -> tuple[int, bool]:
    version, created = await store.versions.publish(snapshot(function, image))
    return version.number, created


def alias(function: Function, name: str = "live", version: int = 0, **fields: object) -> Alias:
    return Alias(
        id=str(uuid.uuid4()), name=name, function_id=function.id, function_version=version, **fields
    )


async def test_numbers_start_at_one_and_are_never_reused(store: Store) -> None:
    function = await make_function(store)
    assert await publish(store, function) == (1, True)
    function = await store.functions.update(function.evolve(timeout=5.0))
    assert await publish(store, function) == (2, True)
    await store.versions.delete(function, 2)
    function = await store.functions.update(function.evolve(timeout=7.0))
    assert await publish(store, function) == (3, True)
    assert (await store.functions.get("default", function.id)).latest_version == 3
    assert [v.number for v in await store.versions.list("default", function.id)] == [1, 3]


async def test_publishing_unchanged_code_and_config_returns_the_latest(store: Store) -> None:
    function = await make_function(store)
    first, _ = await store.versions.publish(snapshot(function, IMAGE, description="first"))
    again, created = await store.versions.publish(snapshot(function, IMAGE))
    assert not created and again.id == first.id and again.description == "first"
    assert (await store.functions.get("default", function.id)).latest_version == 1
    # The image is part of the snapshot: a rebuilt runtime image makes a new version.
    assert await publish(store, function, "sha256:" + "2" * 64) == (2, True)


async def test_a_version_is_an_immutable_snapshot(store: Store) -> None:
    function = await make_function(store, entry="main.main", cpu=500)
    await publish(store, function)
    await store.functions.update(
        function.evolve(package=OTHER_PACKAGE, entry="other.main", cpu=2000, timeout=3.0)
    )
    version = await store.versions.find("default", function.id, 1)
    assert version is not None
    assert (version.package, version.entry, version.cpu) == (PACKAGE, "main.main", 500)
    assert (version.image_id, version.timeout) == (IMAGE, function.timeout)
    assert version.created_at.tzinfo is not None


async def test_a_snapshot_of_a_function_that_changed_meanwhile_is_refused(store: Store) -> None:
    function = await make_function(store)
    stale = snapshot(function, IMAGE)
    await store.functions.update(function.evolve(cpu=250))
    with pytest.raises(Conflict, match="changed"):
        await store.versions.publish(stale)
    assert await store.versions.list("default", function.id) == []


async def test_concurrent_publishes_of_the_same_code_make_one_version(store: Store) -> None:
    function = await make_function(store)
    results = await asyncio.gather(*(publish(store, function) for _ in range(6)))
    assert sorted(results) == [(1, False)] * 5 + [(1, True)]
    assert (await store.functions.get("default", function.id)).latest_version == 1


async def test_a_version_used_by_an_alias_cannot_be_deleted(store: Store) -> None:
    function = await make_function(store)
    await publish(store, function)
    function = await store.functions.update(function.evolve(cpu=250))
    await publish(store, function)
    await store.aliases.create(alias(function, "live", 1))
    await store.aliases.create(alias(function, "canary", 0, routing=Routing(version=2, weight=0.1)))
    with pytest.raises(Forbidden, match="alias 'live'") as used:
        await store.versions.delete(function, 1)
    assert used.value.details == {"aliases": ["live"]}
    with pytest.raises(Forbidden, match="alias 'canary'"):
        await store.versions.delete(function, 2)
    await store.aliases.delete("default", "live")
    assert (await store.versions.delete(function, 1)).number == 1
    with pytest.raises(NotFound):
        await store.versions.delete(function, 1)


async def test_aliases_need_existing_versions_and_unique_names(store: Store) -> None:
    function = await make_function(store)
    await publish(store, function)
    created = await store.aliases.create(alias(function, "live", 1, description="prod"))
    assert await store.aliases.get("default", "live") == created
    with pytest.raises(AlreadyExists, match="live"):
        await store.aliases.create(alias(function, "live", 0))
    with pytest.raises(NotFound, match="version 2"):
        await store.aliases.create(alias(function, "next", 2))
    with pytest.raises(NotFound, match="version 5"):
        await store.aliases.create(alias(function, "next", 1, routing=Routing(5, 0.5)))
    moved = await store.aliases.update(created.evolve(function_version=0, routing=Routing(1, 0.25)))
    assert await store.aliases.get("default", "live") == moved
    assert [a.name for a in await store.aliases.list("default", function.id)] == ["live"]


async def test_versions_and_aliases_are_scoped_to_their_project(store: Store) -> None:
    await store.projects.ensure("other", "other")
    function = await make_function(store)
    await publish(store, function)
    await store.aliases.create(alias(function))
    assert await store.versions.find("other", function.id, 1) is None
    assert await store.versions.list("other", function.id) == []
    assert await store.aliases.find("other", "live") is None
    assert await store.aliases.list("other") == []
    with pytest.raises(NotFound):
        await store.aliases.delete("other", "live")
    # The same name is free in another project (there, the function does not exist).
    foreign = Alias(id=str(uuid.uuid4()), name="live", function_id=function.id, project_id="other")
    with pytest.raises(NotFound, match="function"):
        await store.aliases.create(foreign)


async def test_deleting_a_function_with_aliases_is_refused(store: Store) -> None:
    function = await make_function(store)
    await store.aliases.create(alias(function, "b-live"))
    await store.aliases.create(alias(function, "a-live"))
    with pytest.raises(Forbidden, match="'a-live', 'b-live'"):
        await store.functions.delete(function)
    assert await store.functions.find("default", function.id) is not None


async def test_deleting_a_function_deletes_its_versions(store: Store) -> None:
    function = await make_function(store)
    await publish(store, function)
    function = await store.functions.update(function.evolve(package=OTHER_PACKAGE))
    await publish(store, function)
    assert await store.versions.unused_images({IMAGE, "sha256:other"}) == {"sha256:other"}
    assert await store.functions.delete(function) == (
        {PACKAGE.sha256, OTHER_PACKAGE.sha256},
        {IMAGE},
    )
    assert await store.versions.list("default", function.id) == []
    assert await store.versions.unused_images({IMAGE, "sha256:other"}) == {IMAGE, "sha256:other"}
    assert await store.functions.drop_package_if_unused(PACKAGE.sha256)


async def test_packages_and_runtimes_used_by_versions_are_kept(store: Store) -> None:
    function = await make_function(store)
    await publish(store, function)
    other_runtime = await make_runtime(store, "python-next")
    await store.functions.update(
        function.evolve(package=OTHER_PACKAGE, runtime_id=other_runtime.id)
    )
    assert not await store.functions.drop_package_if_unused(PACKAGE.sha256)
    assert await store.runtimes.in_use(function.runtime_id)  # by version 1 only
    await store.versions.delete(function, 1)
    assert await store.functions.drop_package_if_unused(PACKAGE.sha256)
    assert not await store.runtimes.in_use(function.runtime_id)
