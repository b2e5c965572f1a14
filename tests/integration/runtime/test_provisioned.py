"""Provisioned containers: kept initialised for a function whatever the keep-alive, never
evicted for others, released idle at once and busy once their execution ends."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from spinlet.errors import RuntimeBackendError
from spinlet.runtime.backend import ContainerInfo, FunctionSpec, StartKind
from spinlet.runtime.pool import PoolBackend
from tests.helpers import eventually
from tests.integration.runtime.backends import COUNTER, SLEEPS, Target, execute

#: Code whose import fails: no container can be initialised for it.
BROKEN = """
    raise ImportError("this module cannot be loaded")
"""


def provisioned(containers: list[ContainerInfo]) -> int:
    return sum(1 for c in containers if c.provisioned)


async def _provision(backend: PoolBackend, spec: FunctionSpec, package: bytes, count: int) -> int:
    async def load_code() -> bytes:
        return package

    return await backend.provision(spec, count, load_code)


async def test_provisioned_containers_outlive_the_keep_alive_and_serve_warm(
    target: Target,
) -> None:
    async with target.opened(keep_alive=0.2) as backend:
        kept, kept_package = target.spec(COUNTER)
        other, other_package = target.spec(COUNTER)
        assert await _provision(backend, kept, kept_package, 2) == 2
        assert (await execute(backend, other, other_package)).result == 1

        async def other_reaped() -> bool:
            return all(c.function_id != other.function_id for c in await backend.containers())

        await eventually(other_reaped, within=30)
        assert provisioned(await backend.containers()) == 2
        outcome = await execute(backend, kept, kept_package)
        assert (outcome.start_kind, outcome.result) == (StartKind.WARM, 1)
        # asking again for as many starts nothing; for fewer releases the idle ones at once
        assert await _provision(backend, kept, kept_package, 2) == 2
        assert len(await backend.containers()) == 2
        assert await _provision(backend, kept, kept_package, 1) == 1
        assert provisioned(await backend.containers()) == 1
        backend.unprovision(kept.function_id)

        async def none_left() -> bool:
            return await backend.containers() == []

        await eventually(none_left, within=30)


async def test_provisioned_containers_are_not_evicted_and_what_fits_starts(
    target: Target,
) -> None:
    async with target.opened(max_containers=2) as backend:
        kept, kept_package = target.spec(COUNTER)
        assert await _provision(backend, kept, kept_package, 3) == 2  # no room for a third
        other, other_package = target.spec(COUNTER)
        # another function's call waits for room rather than evicting them: here it cannot
        # get any, so it is cancelled, and the provisioned ones are still there
        waiting = asyncio.ensure_future(execute(backend, other, other_package))
        done, _ = await asyncio.wait({waiting}, timeout=1.0)
        assert not done
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert provisioned(await backend.containers()) == 2
        backend.unprovision(kept.function_id)
        assert (await execute(backend, other, other_package)).result == 1


async def test_new_code_replaces_the_provisioned_containers_and_bad_code_is_an_error(
    target: Target,
) -> None:
    async with target.opened() as backend:
        old, package = target.spec(COUNTER)
        await _provision(backend, old, package, 1)
        [before] = await backend.containers()
        new = replace(old, environment={"A": "1"})
        assert await _provision(backend, new, package, 1) == 1

        async def replaced() -> bool:
            return [c.id for c in await backend.containers()] not in ([before.id], [])

        await eventually(replaced, within=30)
        broken, broken_package = target.spec(BROKEN)
        unloadable = r"could not be initialised.*cannot be loaded"
        with pytest.raises(RuntimeBackendError, match=unloadable):
            await _provision(backend, broken, broken_package, 1)
        backend.unprovision(old.function_id)


async def test_a_busy_provisioned_container_goes_once_its_execution_ends(
    target: Target,
) -> None:
    async with target.opened() as backend:
        spec, package = target.spec(SLEEPS)
        await _provision(backend, spec, package, 1)
        running = asyncio.ensure_future(execute(backend, spec, package, 0.5))

        async def busy() -> bool:
            return [c.state for c in await backend.containers()] == ["busy"]

        await eventually(busy, within=30)
        backend.unprovision(spec.function_id)
        assert len(await backend.containers()) == 1  # still running
        outcome = await running
        assert (outcome.start_kind, outcome.result) == (StartKind.WARM, 0.5)

        async def gone() -> bool:
            return await backend.containers() == []

        await eventually(gone, within=30)
