"""The runtime-backend contract, written once and run against every backend.

`process` runs the runtime server as local processes (fast, no Docker); `docker` runs it in
hardened containers and needs the engine and the runtime image (`-m docker`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from spinlet.errors import RuntimeBackendError
from spinlet.runtime.backend import OutcomeStatus, StartKind, attached_outcome
from spinlet.runtime.factory import make_backend
from spinlet.runtime.pool import PoolBackend
from tests.helpers import eventually
from tests.integration.runtime.backends import (
    BUSY_LOOP,
    COUNTER,
    HELLO,
    RAISES,
    SLEEPS,
    Target,
    execute,
)


async def test_hello_returns_its_result_and_all_its_output(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(HELLO)
    outcome = await execute(backend, spec, package, {"name": "world"})
    assert outcome.status is OutcomeStatus.SUCCESS, outcome
    assert outcome.result["greeting"] == "hello world"
    for line in ("hello from print", "hello from fd 1", "hello from a child", "hello from stderr"):
        assert line in outcome.logs
    assert outcome.logs.index("hello from print") < outcome.logs.index("hello from fd 1")
    assert outcome.logs.index("hello from fd 1") < outcome.logs.index("hello from a child")
    assert outcome.error is None
    assert outcome.duration_ms > 0
    assert outcome.image_id
    [container] = await backend.containers()
    assert outcome.container_id == container.id  # the container it ran in, idle now


async def test_an_exception_fails_the_execution_and_keeps_the_container(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(RAISES)
    outcome = await execute(backend, spec, package, 42)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.status_reason == "exception"
    assert outcome.error is not None
    assert outcome.error.type == "ValueError"
    assert outcome.error.message == "boom 42"
    assert "ValueError" in outcome.error.traceback
    assert "about to fail" in outcome.logs
    [container] = await backend.containers()
    assert container.state == "idle"
    again = await execute(backend, spec, package, 43)
    assert again.start_kind is StartKind.WARM
    assert again.error is not None and again.error.message == "boom 43"


async def test_a_missing_entry_function_fails_clearly(target: Target, backend: PoolBackend) -> None:
    spec, package = target.spec(COUNTER, entry="main.nope")
    outcome = await execute(backend, spec, package)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.status_reason == "exception"
    assert outcome.error is not None
    assert "nope" in outcome.error.message
    assert await backend.containers() == []  # a container that could not init is destroyed


async def test_limits_above_the_nodes_are_refused_naming_its_maximum(
    target: Target, backend: PoolBackend
) -> None:
    capacity = await backend.capacity()
    assert capacity.cpu >= 1000 and capacity.memory_size >= 128 * 1024 * 1024
    spec, package = target.spec(HELLO)
    spec = replace(spec, cpu=capacity.cpu + 1000)
    with pytest.raises(RuntimeBackendError, match=f"at most {capacity.cpu} millicores"):
        await execute(backend, spec, package, {"name": "big"})
    assert await backend.containers() == []


async def test_an_import_error_fails_with_the_import_logs(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec('print("importing")\nraise RuntimeError("bad module")\n')
    outcome = await execute(backend, spec, package)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.status_reason == "exception"
    assert outcome.error is not None
    assert "bad module" in outcome.error.message
    assert "importing" in outcome.logs
    assert await backend.containers() == []


async def test_the_second_execution_is_warm_and_reuses_the_container(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(COUNTER)
    first = await execute(backend, spec, package)
    second = await execute(backend, spec, package)
    assert (first.status, first.result, first.start_kind) == (
        OutcomeStatus.SUCCESS,
        1,
        StartKind.COLD,
    )
    assert first.init_ms is not None and first.init_ms > 0
    assert (second.status, second.result, second.start_kind) == (
        OutcomeStatus.SUCCESS,
        2,
        StartKind.WARM,
    )
    assert second.init_ms is None
    assert second.image_id == first.image_id
    [container] = await backend.containers()
    assert (container.function_id, container.version, container.state) == (
        spec.function_id,
        1,
        "idle",
    )


async def test_another_version_or_code_gets_its_own_container(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(COUNTER)
    assert (await execute(backend, spec, package)).result == 1
    for other in (replace(spec, version=2), replace(spec, package_hash="0" * 64)):
        outcome = await execute(backend, other, package)
        assert (outcome.result, outcome.start_kind) == (1, StartKind.COLD)
    assert len(await backend.containers()) == 3
    assert (await execute(backend, spec, package)).result == 2


async def test_parallel_executions_get_one_container_each(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(SLEEPS)
    outcomes = await asyncio.gather(*(execute(backend, spec, package, 0.3) for _ in range(2)))
    assert [outcome.result for outcome in outcomes] == [0.3, 0.3]
    assert len(await backend.containers()) == 2


async def test_a_busy_loop_is_stopped_at_its_timeout(target: Target, backend: PoolBackend) -> None:
    spec, package = target.spec(BUSY_LOOP, timeout=2.0)
    started = time.monotonic()
    outcome = await execute(backend, spec, package)
    elapsed = time.monotonic() - started
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.status_reason == "timeout"
    assert outcome.error is not None
    assert outcome.error.as_json() == {
        "type": "Timeout",
        "message": "execution exceeded its timeout of 2 s",
        "traceback": "",
    }
    assert 2.0 <= elapsed < 20.0
    assert await backend.containers() == []
    assert target.code_dirs() == []
    assert await target.leftovers() == []
    # The pool is still usable afterwards.
    spec, package = target.spec(COUNTER)
    assert (await execute(backend, spec, package)).result == 1


async def test_idle_containers_are_reaped_after_keep_alive(target: Target) -> None:
    backend = target.make(keep_alive=0.2)
    await backend.open()
    try:
        spec, package = target.spec(COUNTER)
        assert (await execute(backend, spec, package)).result == 1

        async def all_reaped() -> bool:
            gone = await backend.containers() == [] and await target.leftovers() == []
            return gone and target.code_dirs() == []

        await eventually(all_reaped, within=5.0)
    finally:
        await backend.close()


async def test_the_container_cap_evicts_the_least_recently_used(target: Target) -> None:
    backend = target.make(max_containers=2)
    await backend.open()
    try:
        specs = [target.spec(COUNTER) for _ in range(3)]
        for spec, package in specs:
            assert (await execute(backend, spec, package)).result == 1
        held = {container.function_id for container in await backend.containers()}
        assert held == {specs[1][0].function_id, specs[2][0].function_id}
        assert len(await target.leftovers()) == 2
    finally:
        await backend.close()


async def test_close_leaves_no_container_behind(target: Target) -> None:
    backend = target.make()
    await backend.open()
    busy = None
    try:
        for source in (COUNTER, HELLO):
            spec, package = target.spec(source)
            await execute(backend, spec, package, {"name": "x"})
        spec, package = target.spec(SLEEPS)
        busy = asyncio.create_task(execute(backend, spec, package, 30))

        async def all_three_started() -> bool:
            return len(await backend.containers()) == 3

        await eventually(all_three_started)
        assert len(await target.leftovers()) == 3
    finally:
        await backend.close()
    assert await target.leftovers() == []
    outcome = await busy
    assert (outcome.status, outcome.status_reason) == (OutcomeStatus.ERROR, "lost")


async def test_open_removes_what_an_earlier_run_left(target: Target) -> None:
    first = target.make()
    await first.open()
    spec, package = target.spec(COUNTER)
    await execute(first, spec, package)
    assert len(await target.leftovers()) == 1  # "crash": first is never closed
    assert len(target.code_dirs()) == 1
    second = target.make()
    await second.open()
    try:
        assert await target.leftovers() == []
        assert target.code_dirs() == []
    finally:
        await second.close()
        await first.close()


async def test_a_cancelled_execution_destroys_its_container(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(SLEEPS)
    running = asyncio.create_task(execute(backend, spec, package, 30))

    async def busy() -> bool:
        return [info.state for info in await backend.containers()] == ["busy"]

    await eventually(busy)
    [container] = await backend.containers()
    running.cancel()
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await running
    stopped = attached_outcome(cancelled.value)
    assert stopped is not None and stopped.container_id == container.id
    assert await backend.containers() == []
    assert await target.leftovers() == []
    assert target.code_dirs() == []


async def test_a_container_that_died_while_idle_is_replaced(
    target: Target, backend: PoolBackend
) -> None:
    spec, package = target.spec(COUNTER)
    assert (await execute(backend, spec, package)).result == 1
    [info] = await backend.containers()
    await target.kill(info.id)

    async def gone() -> bool:
        return await target.leftovers() == [] or target.kind == "docker"

    async def removed() -> bool:  # the pool destroys what the driver reports stopped
        return target.code_dirs() == []

    await eventually(gone)
    await eventually(removed)
    await asyncio.sleep(0.1)  # the kept-open connection sees its end
    outcome = await execute(backend, spec, package)
    assert (outcome.status, outcome.result, outcome.start_kind) == (
        OutcomeStatus.SUCCESS,
        1,
        StartKind.COLD,
    )
    assert [c.id for c in await backend.containers()] != [info.id]


def test_backends_are_chosen_by_name(tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "node_id": "n1",
        "work_dir": tmp_path,
        "keep_alive": 1.0,
        "log_limit": 1000,
        "max_containers": 2,
    }
    for kind, driver_name in (("process", "process"), ("docker", "docker")):
        backend = make_backend(kind, **options)
        assert isinstance(backend, PoolBackend)
        assert (backend.driver.name, backend.keep_alive, backend.max_containers) == (
            driver_name,
            1.0,
            2,
        )
    with pytest.raises(ValueError, match="docker, process"):
        make_backend("kubernetes", **options)
