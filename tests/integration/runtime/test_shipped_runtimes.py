"""Functions behave the same in every shipped runtime (`tests/runtimes.py`), run by the node's
pool in real containers: output captured at the file-descriptor level, errors with their
traceback, warm containers reused, and a timeout enforced from outside."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from spinlet.runtime.backend import FunctionSpec, OutcomeStatus, RunOutcome, RunRequest, StartKind
from spinlet.runtime.docker_driver import docker_backend
from spinlet.runtime.pool import PoolBackend
from tests.helpers import package_hash
from tests.runtimes import RAISED, Shipped

pytestmark = pytest.mark.docker


@pytest.fixture
async def backend(docker_client: Any, socket_root: Path) -> AsyncIterator[PoolBackend]:
    node_id = f"test-{uuid.uuid4().hex[:8]}"
    backend = docker_backend(node_id, socket_root, client=docker_client, stem_cells=0)
    await backend.open()
    yield backend
    await backend.close()
    left = docker_client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"spinlet.node={node_id}"}
    )
    assert left == [], "containers left behind"


async def execute(
    backend: PoolBackend, shipped: Shipped, function: str, data: Any = None, seconds: float = 20
) -> RunOutcome:
    package = shipped.package(function)
    spec = FunctionSpec(
        function_id=f"fn-{function}-{shipped.name}",
        function_name=function,
        version=1,
        package_hash=package_hash(package),
        image=shipped.image,
        timeout=seconds,
    )

    async def load_code() -> bytes:
        return package

    return await backend.execute(spec, load_code, RunRequest(str(uuid.uuid4()), data))


async def test_all_output_is_captured_and_the_result_returned(
    backend: PoolBackend, shipped: Shipped
) -> None:
    outcome = await execute(backend, shipped, "hello", {"name": "world"})
    assert outcome.status is OutcomeStatus.SUCCESS, outcome
    assert outcome.result["greeting"] == "hello world"
    assert outcome.result["execution_id"]
    lines = ("hello from print", "hello from fd 1", "hello from a child", "hello from stderr")
    for line in lines:
        assert line in outcome.logs
    stdout = [outcome.logs.index(line) for line in lines[:3]]
    assert stdout == sorted(stdout)


async def test_an_exception_fails_with_its_traceback_at_the_end_of_the_log(
    backend: PoolBackend, shipped: Shipped
) -> None:
    outcome = await execute(backend, shipped, "raises", 42)
    assert (outcome.status, outcome.status_reason) == (OutcomeStatus.FAILED, "exception")
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == (RAISED[shipped.language], "boom 42")
    assert "boom 42" in outcome.error.traceback
    assert "about to fail" in outcome.logs
    assert outcome.logs.rstrip("\n").endswith(outcome.error.traceback.rstrip("\n"))


async def test_a_warm_container_keeps_the_functions_state(
    backend: PoolBackend, shipped: Shipped
) -> None:
    first = await execute(backend, shipped, "counter")
    second = await execute(backend, shipped, "counter")
    assert (first.result, first.start_kind) == (1, StartKind.COLD)
    assert (second.result, second.start_kind) == (2, StartKind.WARM)


async def test_a_busy_loop_ends_at_its_timeout(backend: PoolBackend, shipped: Shipped) -> None:
    outcome = await execute(backend, shipped, "spin", "go", seconds=2.0)
    assert (outcome.status, outcome.status_reason) == (OutcomeStatus.FAILED, "timeout")
    assert outcome.error is not None
    assert outcome.error.message == "execution exceeded its timeout of 2 s"
    assert await backend.containers() == []
