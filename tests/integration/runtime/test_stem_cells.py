"""Stem cells: started in advance per shape, taken by first calls, refilled in the background."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from spinlet.errors import RuntimeBackendError
from spinlet.runtime.backend import FunctionSpec, OutcomeStatus, StartKind
from spinlet.runtime.driver import Sandbox, SandboxShape
from spinlet.runtime.pool import PoolBackend
from spinlet.runtime.process_driver import ProcessDriver
from tests.helpers import eventually
from tests.integration.runtime.backends import COUNTER, Target, execute

MiB = 1024 * 1024
DEFAULT_MEMORY = 128 * MiB
DEFAULT_CPU = 1000


async def settled(backend: PoolBackend, **expected: int) -> None:
    """Wait until nothing is starting and the counts by state are `expected` (others 0)."""

    async def check() -> bool:
        stats = backend.stats()
        want = {"starting": 0, "stem": 0, "busy": 0, "idle": 0, **expected}
        return all(stats[state] == count for state, count in want.items())

    await eventually(check, within=60)


async def stem_ids(backend: PoolBackend) -> set[str]:
    return {c.id for c in await backend.containers() if c.state == "stem"}


async def test_prewarmed_stem_cells_serve_first_calls_and_are_refilled(target: Target) -> None:
    async with target.opened(stem_cells=2) as backend:
        backend.prewarm(target.image, DEFAULT_MEMORY, DEFAULT_CPU)
        await settled(backend, stem=2)
        stems = await backend.containers()
        assert {(c.state, c.function_id, c.version, c.image) for c in stems} == {
            ("stem", None, None, target.image)
        }
        ready = {c.id for c in stems}

        spec, package = target.spec(COUNTER)
        first = await execute(backend, spec, package)
        assert (first.status, first.result, first.start_kind) == (
            OutcomeStatus.SUCCESS,
            1,
            StartKind.STEM,
        )
        assert first.init_ms is not None and 0 < first.init_ms < 5000
        [used] = [c for c in await backend.containers() if c.function_id == spec.function_id]
        assert used.id in ready and used.state == "idle"

        await settled(backend, stem=2, idle=1)  # refilled in the background
        refill = await stem_ids(backend)
        assert used.id not in refill and len(refill & ready) == 1

        again = await execute(backend, spec, package)
        assert (again.result, again.start_kind, again.init_ms) == (2, StartKind.WARM, None)
        other = await execute(backend, *target.spec(COUNTER))
        assert (other.result, other.start_kind) == (1, StartKind.STEM)


async def test_a_shape_in_use_gets_stem_cells_without_prewarming(target: Target) -> None:
    async with target.opened(stem_cells=2) as backend:
        first = await execute(backend, *target.spec(COUNTER))
        assert first.start_kind is StartKind.COLD
        await settled(backend, stem=2, idle=1)
        same_shape = await execute(backend, *target.spec(COUNTER))
        assert same_shape.start_kind is StartKind.STEM
        other_shape = await execute(backend, *target.spec(COUNTER, memory_size=96 * MiB))
        assert other_shape.start_kind is StartKind.COLD


async def test_stem_cells_count_toward_the_cap_and_are_evicted_first(target: Target) -> None:
    async with target.opened(stem_cells=2, max_containers=3) as backend:
        backend.prewarm(target.image, DEFAULT_MEMORY, DEFAULT_CPU)
        await settled(backend, stem=2)
        warm = target.spec(COUNTER)
        assert (await execute(backend, *warm)).start_kind is StartKind.STEM
        await settled(backend, stem=2, idle=1)  # the cap: 3
        other = target.spec(COUNTER, memory_size=64 * MiB)
        assert (await execute(backend, *other)).start_kind is StartKind.COLD  # evicts a stem
        await settled(backend, stem=1, idle=2)
        held = {c.function_id for c in await backend.containers() if c.state == "idle"}
        assert held == {warm[0].function_id, other[0].function_id}
        assert len(await target.leftovers()) == 3
        assert (await execute(backend, *warm)).start_kind is StartKind.WARM


async def test_a_stem_cell_that_dies_is_replaced(target: Target) -> None:
    async with target.opened(stem_cells=2) as backend:
        backend.prewarm(target.image, DEFAULT_MEMORY, DEFAULT_CPU)
        await settled(backend, stem=2)
        before = await stem_ids(backend)
        killed = sorted(before)[0]
        await target.kill(killed)

        async def replaced() -> bool:
            now = await stem_ids(backend)
            return len(now) == 2 and killed not in now and len(await target.leftovers()) == 2

        await eventually(replaced, within=30)
        assert (await execute(backend, *target.spec(COUNTER))).start_kind is StartKind.STEM


async def test_stem_cells_of_shapes_no_longer_used_are_removed(target: Target) -> None:
    # The used shape's stem cell must be made before the idle container's keep-alive ends
    # (then both go): a keep-alive no loaded machine's container start reaches.
    async with target.opened(stem_cells=1, keep_alive=15.0) as backend:
        backend.prewarm(target.image, DEFAULT_MEMORY, DEFAULT_CPU)
        used = await execute(backend, *target.spec(COUNTER, memory_size=96 * MiB))
        assert used.status is OutcomeStatus.SUCCESS
        await eventually(_sync_stats(backend, stem=2, idle=1), within=30)
        # After keep_alive: the idle container and the used shape's stem cell go; the
        # prewarmed shape keeps its own.
        await settled(backend, stem=1)
        assert backend.stats()["memory_bytes"] == DEFAULT_MEMORY


@pytest.mark.parametrize("after", [0.0, 0.05, 0.3])
async def test_close_removes_stem_cells_being_made(target: Target, after: float) -> None:
    backend = target.make(stem_cells=2)
    await backend.open()
    backend.prewarm(target.image, DEFAULT_MEMORY, DEFAULT_CPU)
    await asyncio.sleep(after)
    await backend.close()
    assert await target.leftovers() == []


class FailingStems(ProcessDriver):
    """Makes sandboxes for functions, and fails every stem cell."""

    attempts = 0

    async def create(
        self, shape: SandboxShape, spec: FunctionSpec | None = None, *, keep_output: bool = False
    ) -> Sandbox:
        if spec is None:
            self.attempts += 1
            raise RuntimeBackendError("no stem cells today")
        return await super().create(shape, spec, keep_output=keep_output)


async def test_failing_stem_cells_back_off_and_never_reach_executions(
    socket_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = FailingStems(socket_root, node_id=f"test-{uuid.uuid4().hex[:8]}")
    backend = PoolBackend(driver, stem_cells=2)
    await backend.open()
    try:
        backend.prewarm("any", DEFAULT_MEMORY, DEFAULT_CPU)
        spec = Target("process", driver.node_id, socket_root, "any").spec(COUNTER)
        for n in (1, 2, 3):
            outcome = await execute(backend, *spec)
            assert (outcome.status, outcome.result) == (OutcomeStatus.SUCCESS, n)
        await asyncio.sleep(1.5)
        assert 2 <= driver.attempts <= 4  # two at first, then a back-off of 1 s, then 2 s
        assert backend.stats()["stem"] == 0
    finally:
        await backend.close()
    [warning, *_] = [r for r in caplog.records if "could not make a stem cell" in r.message]
    assert warning.levelno == logging.WARNING and "no stem cells today" in warning.message


@pytest.mark.docker
async def test_prewarming_a_missing_image_is_logged_not_raised(
    docker_target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    async with docker_target.opened(stem_cells=2) as backend:
        backend.prewarm("spinlet/no-such-runtime:0", DEFAULT_MEMORY, DEFAULT_CPU)
        await eventually(_sync_log(caplog, "spinlet/no-such-runtime:0"), within=10)
        assert backend.stats()["containers"] == 0
        outcome = await execute(backend, *docker_target.spec(COUNTER))
        assert (outcome.status, outcome.start_kind) == (OutcomeStatus.SUCCESS, StartKind.COLD)


def _sync_stats(backend: PoolBackend, **expected: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        stats = backend.stats()
        return all(stats[state] == count for state, count in expected.items())

    return check


def _sync_log(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in caplog.text

    return check
