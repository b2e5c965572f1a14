"""The warm pool: reuse, what the warm path costs, the memory cap, and sandboxes that die."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from spinlet.errors import RuntimeBackendError
from spinlet.runtime.backend import OutcomeStatus, StartKind
from spinlet.runtime.pool import PoolBackend
from tests.helpers import eventually
from tests.integration.runtime.backends import COUNTER, SLEEPS, Target, execute

MiB = 1024 * 1024
WARM_CALLS = 50


async def test_consecutive_executions_reuse_one_container(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(COUNTER)
    first = await execute(backend, spec, package)
    [container] = await backend.containers()
    rest = [await execute(backend, spec, package) for _ in range(4)]
    # The module-level counter lives on in the one container that served every call.
    assert [o.result for o in (first, *rest)] == [1, 2, 3, 4, 5]
    assert [o.start_kind for o in (first, *rest)] == [StartKind.COLD] + [StartKind.WARM] * 4
    assert [c.id for c in await backend.containers()] == [container.id]
    assert backend.stats() == {
        "starting": 0,
        "stem": 0,
        "busy": 0,
        "idle": 1,
        "containers": 1,
        "memory_bytes": spec.memory_size,
    }


@pytest.mark.docker
async def test_warm_executions_make_no_docker_api_call(
    docker_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request the Docker client sends goes through `APIClient.send`: count them."""
    client = docker_target.docker_client
    calls: list[str] = []
    send = client.api.send

    def counting_send(request: Any, **kwargs: Any) -> Any:
        calls.append(f"{request.method} {request.path_url}")
        return send(request, **kwargs)

    async with docker_target.opened(stem_cells=2) as backend:  # stem cells and events on
        spec, package = docker_target.spec(COUNTER)
        assert (await execute(backend, spec, package)).start_kind is StartKind.COLD

        def settled() -> bool:
            stats = backend.stats()
            return (stats["stem"], stats["starting"]) == (2, 0)

        await eventually(_sync(settled), within=30)
        monkeypatch.setattr(client.api, "send", counting_send)
        for n in range(2, WARM_CALLS + 2):
            outcome = await execute(backend, spec, package)
            assert (outcome.result, outcome.start_kind) == (n, StartKind.WARM)
        assert calls == []
        await backend.image_id(docker_target.image)  # the counting does count
        assert len(calls) == 1
        monkeypatch.undo()


async def test_the_memory_cap_evicts_the_least_recently_used_idle_containers(
    target: Target,
) -> None:
    async with target.opened(max_memory=256 * MiB) as backend:
        first, second, third = (target.spec(COUNTER, memory_size=128 * MiB) for _ in range(3))
        for spec, package in (first, second, first):
            await execute(backend, spec, package)
        assert backend.stats()["memory_bytes"] == 256 * MiB
        await execute(backend, *third)  # evicts `second`, the least recently used
        held = {c.function_id for c in await backend.containers()}
        assert held == {first[0].function_id, third[0].function_id}

        big = target.spec(COUNTER, memory_size=256 * MiB)
        assert (await execute(backend, *big)).status is OutcomeStatus.SUCCESS  # evicts both
        assert [c.function_id for c in await backend.containers()] == [big[0].function_id]
        assert backend.stats()["memory_bytes"] == 256 * MiB
        assert len(await target.leftovers()) == 1

        huge = target.spec(COUNTER, memory_size=512 * MiB)
        with pytest.raises(RuntimeBackendError, match="max_memory"):
            await execute(backend, *huge)


async def test_a_cold_start_at_the_cap_waits_for_a_busy_container_to_finish(
    target: Target,
) -> None:
    async with target.opened(max_containers=1) as backend:
        sleeper = target.spec(SLEEPS)
        running = asyncio.create_task(execute(backend, *sleeper, 0.5))
        await eventually(_sync(lambda: backend.stats()["busy"] == 1))
        counter = target.spec(COUNTER)
        outcome = await execute(backend, *counter)  # waits, then evicts the sleeper once idle
        assert (outcome.result, (await running).result) == (1, 0.5)
        assert [c.function_id for c in await backend.containers()] == [counter[0].function_id]


async def test_a_project_at_its_container_quota_reuses_its_own_room(target: Target) -> None:
    async with target.opened(max_project_containers=2) as backend:
        mine = [target.spec(COUNTER, project_id="greedy") for _ in range(3)]
        theirs = target.spec(COUNTER, project_id="modest")
        for spec, package in (theirs, mine[0], mine[1]):
            await execute(backend, spec, package)
        # A third function of the project at its quota replaces the project's least recently
        # used container, never another project's.
        await execute(backend, *mine[2])
        held = {c.function_id for c in await backend.containers()}
        assert held == {theirs[0].function_id, mine[1][0].function_id, mine[2][0].function_id}
        # With all of its containers busy, its next new one waits for one of them to end.
        sleepers = [target.spec(SLEEPS, project_id="greedy") for _ in range(3)]
        first = [asyncio.create_task(execute(backend, *s, 0.5)) for s in sleepers[:2]]
        await eventually(_sync(lambda: backend.stats()["busy"] == 2))
        third = asyncio.create_task(execute(backend, *sleepers[2], 0.1))
        other = await execute(backend, *target.spec(COUNTER, project_id="modest"))
        assert other.start_kind is StartKind.COLD  # another project is not held up
        assert not third.done()
        assert [o.result for o in await asyncio.gather(*first, third)] == [0.5, 0.5, 0.1]
        greedy = [
            c
            for c in await backend.containers()
            if c.function_id in {spec.function_id for spec, _ in mine + sleepers}
        ]
        assert len(greedy) == 2


async def test_a_container_killed_mid_execution_fails_it_and_the_next_one_runs(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(SLEEPS)
    running = asyncio.create_task(execute(backend, spec, package, 30))
    await eventually(_sync(lambda: backend.stats()["busy"] == 1))
    [killed] = await backend.containers()
    await target.kill(killed.id)
    outcome = await asyncio.wait_for(running, 10)
    assert (outcome.status, outcome.status_reason) == (OutcomeStatus.FAILED, "crashed")
    assert outcome.error is not None and outcome.error.type == "ContainerCrashed"
    assert await backend.containers() == []
    again = await execute(backend, spec, package, 0)
    assert (again.status, again.result, again.start_kind) == (
        OutcomeStatus.SUCCESS,
        0,
        StartKind.COLD,
    )
    assert [c.id for c in await backend.containers()] != [killed.id]


async def test_a_container_that_dies_while_idle_leaves_the_pool_at_once(
    target: Target, backend: PoolBackend
) -> None:
    """The driver reports the death (Docker events, the process's exit): no execution needed."""
    spec, package = target.spec(COUNTER)
    await execute(backend, spec, package)
    [info] = await backend.containers()
    await target.kill(info.id)

    async def dropped() -> bool:
        return await backend.containers() == [] and await target.leftovers() == []

    await eventually(dropped, within=10)
    assert backend.stats()["containers"] == 0
    assert (await execute(backend, spec, package)).start_kind is StartKind.COLD


@pytest.mark.docker
async def test_close_stops_following_docker_events(docker_target: Target) -> None:
    def followers() -> list[threading.Thread]:
        name = f"spinlet-docker-events-{docker_target.node_id}"
        return [thread for thread in threading.enumerate() if thread.name == name]

    async with docker_target.opened() as backend:
        [thread] = followers()
        assert thread.is_alive()
        await execute(backend, *docker_target.spec(COUNTER))
    assert followers() == []


def _sync(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`eventually` for a synchronous check."""

    async def run() -> bool:
        return check()

    return run
