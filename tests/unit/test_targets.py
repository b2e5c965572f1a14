"""What an execution runs: the resolver of function, version and alias (on both stores)."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from spinlet.domain import Alias, Function, Package, Routing
from spinlet.errors import NotFound, ValidationFailed
from spinlet.runtime.pool import pool_key
from spinlet.services.targets import TargetResolver
from spinlet.services.versions import snapshot
from spinlet.store import Store
from tests.unit.test_store import PACKAGE, make_function

NEW_PACKAGE = Package(sha256="e" * 64, md5sum="f" * 32, size=30)
OLD_IMAGE = "sha256:" + "1" * 64


async def two_versions(store: Store) -> Function:
    """A function with version 1 (PACKAGE, cpu 500) and version 2 (NEW_PACKAGE, cpu 250)."""
    function = await make_function(store, cpu=500)
    await store.versions.publish(snapshot(function, OLD_IMAGE))
    function = await store.functions.update(function.evolve(package=NEW_PACKAGE, cpu=250))
    await store.versions.publish(snapshot(function, OLD_IMAGE))
    return await store.functions.update(function.evolve(cpu=100))


async def make_alias(store: Store, function: Function, version: int, **fields: object) -> Alias:
    alias = Alias(
        id=str(uuid.uuid4()), name="live", function_id=function.id, function_version=version
    )
    return await store.aliases.create(alias.evolve(**fields))


async def test_versions_run_their_snapshot_and_version_zero_the_current_code(
    store: Store,
) -> None:
    function = await two_versions(store)
    # The runtime's image is rebuilt (a new image behind its name): versions keep theirs.
    runtime = await store.runtimes.get("default", function.runtime_id)
    await store.runtimes.update(runtime.evolve(image="img:rebuilt"))
    resolver = TargetResolver(store)
    v1 = await resolver.target("default", function.id, 1)
    v2 = await resolver.target("default", function.name, 2)
    v0 = await resolver.target("default", function.id, 0)
    assert (v1.version, v1.package, v1.cpu, v1.image) == (1, PACKAGE, 500, OLD_IMAGE)
    assert (v2.version, v2.package, v2.cpu, v2.image) == (2, NEW_PACKAGE, 250, OLD_IMAGE)
    assert (v0.version, v0.package, v0.cpu, v0.image) == (0, NEW_PACKAGE, 100, "img:rebuilt")
    # Containers are keyed by all of it: no two of these can share one.
    assert len({pool_key(v.spec()) for v in (v0, v1, v2)}) == 3
    with pytest.raises(NotFound, match="version 3"):
        await resolver.target("default", function.id, 3)


async def test_an_alias_picks_function_and_version(store: Store) -> None:
    function = await two_versions(store)
    await make_alias(store, function, 1)
    resolver = TargetResolver(store)
    target = await resolver.resolve("default", None, alias="live")
    assert (target.function_id, target.version, target.alias) == (function.id, 1, "live")
    assert (await resolver.resolve("default", function.name, 0, "live")).version == 1
    with pytest.raises(ValidationFailed, match="not both"):
        await resolver.resolve("default", None, 2, "live")
    with pytest.raises(NotFound, match="alias 'nope'"):
        await resolver.resolve("default", None, alias="nope")
    other = await make_function(store, "other")
    with pytest.raises(ValidationFailed, match="another function"):
        await resolver.resolve("default", other.id, alias="live")


async def test_the_canary_is_chosen_with_probability_weight(store: Store) -> None:
    function = await two_versions(store)
    alias = await make_alias(store, function, 1, routing=Routing(version=2, weight=0.1))
    draws = iter([0.0, 0.0999, 0.1, 0.5, 0.99])
    resolver = TargetResolver(store, rng=lambda: next(draws))
    assert [resolver.choose(alias) for _ in range(5)] == [2, 2, 1, 1, 1]

    resolver = TargetResolver(store)  # the real random.random
    total = 20000
    chosen = Counter(resolver.choose(alias) for _ in range(total))
    share = chosen[2] / total
    print(f"canary weight 0.1: {chosen[2]} of {total} choices were version 2 ({share:.4f})")
    # 5 standard deviations of a binomial share (sqrt(0.1 * 0.9 / 20000) = 0.0021).
    assert abs(share - 0.1) < 0.0107
    # Executions resolve through the same choice.
    ran = Counter(
        [(await resolver.resolve("default", None, alias="live")).version for _ in range(300)]
    )
    assert set(ran) == {1, 2} and ran[2] < ran[1]
