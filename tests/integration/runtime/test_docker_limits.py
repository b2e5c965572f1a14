"""What only the Docker backend enforces: memory, isolation, and containers dying mid-run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from spinlet.errors import ImageMissing
from spinlet.runtime.backend import FunctionSpec, OutcomeStatus, RunOutcome, RunRequest
from spinlet.runtime.docker_driver import docker_backend
from spinlet.runtime.pool import PoolBackend
from tests.helpers import eventually, make_package, package_hash

pytestmark = pytest.mark.docker

MEMORY_HOG = """
    def main(event):
        chunks = []
        while True:
            chunks.append(b"x" * (8 * 1024 * 1024))
"""

SLEEPS = """
    import time

    def main(event):
        time.sleep(event)
        return event
"""

PROBE = """
    import os, socket

    def attempt(action):
        try:
            action()
            return "ok"
        except OSError as exc:
            return type(exc).__name__ + ": " + str(exc)

    def write(path):
        with open(path, "w") as file:
            file.write("x")

    def connect():
        with socket.create_connection(("1.1.1.1", 53), timeout=2):
            pass

    def main(event):
        return {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "write_etc": attempt(lambda: write("/etc/spinlet-probe")),
            "write_tmp": attempt(lambda: write("/tmp/spinlet-probe")),
            "interfaces": sorted(os.listdir("/sys/class/net")),
            "connect": attempt(connect),
        }
"""


@pytest.fixture
def node_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def backend(
    docker_client: Any, runtime_image_tag: str, node_id: str, socket_root: Path
) -> AsyncIterator[PoolBackend]:
    backend = docker_backend(node_id, socket_root, client=docker_client, stem_cells=0)
    await backend.open()
    yield backend
    await backend.close()
    assert _node_containers(docker_client, node_id) == []


def _node_containers(client: Any, node_id: str) -> list[Any]:
    return list(
        client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"spinlet.node={node_id}"}
        )
    )


def _spec(source: str, image: str, **changes: Any) -> tuple[FunctionSpec, bytes]:
    package = make_package(source)
    spec = FunctionSpec(
        function_id=f"fn-{uuid.uuid4().hex[:8]}",
        function_name="limits",
        version=1,
        package_hash=package_hash(package),
        image=image,
        timeout=30.0,
    )
    return replace(spec, **changes), package


async def _execute(
    backend: PoolBackend, spec: FunctionSpec, package: bytes, data: Any = None
) -> RunOutcome:
    async def load_code() -> bytes:
        return package

    return await backend.execute(spec, load_code, RunRequest(str(uuid.uuid4()), data))


async def test_a_memory_hog_ends_as_oom(backend: PoolBackend, runtime_image_tag: str) -> None:
    spec, package = _spec(MEMORY_HOG, runtime_image_tag, memory_size=64 * 1024 * 1024)
    outcome = await _execute(backend, spec, package)
    assert (outcome.status, outcome.status_reason) == (OutcomeStatus.FAILED, "oom")
    assert outcome.error is not None
    assert outcome.error.type == "OutOfMemory"
    assert "64 MiB" in outcome.error.message
    assert await backend.containers() == []


async def test_a_container_killed_mid_run_ends_as_crashed(
    backend: PoolBackend, runtime_image_tag: str, docker_client: Any
) -> None:
    spec, package = _spec(SLEEPS, runtime_image_tag)
    running = asyncio.create_task(_execute(backend, spec, package, 20))

    async def busy() -> bool:
        return [c.state for c in await backend.containers()] == ["busy"]

    await eventually(busy)
    [info] = await backend.containers()
    await asyncio.to_thread(docker_client.containers.get(info.id).kill)
    outcome = await asyncio.wait_for(running, 10)
    assert (outcome.status, outcome.status_reason) == (OutcomeStatus.FAILED, "crashed")
    assert outcome.error is not None and outcome.error.type == "ContainerCrashed"
    assert await backend.containers() == []


async def test_the_container_is_unprivileged_read_only_and_offline(
    backend: PoolBackend, runtime_image_tag: str, docker_client: Any, node_id: str
) -> None:
    spec, package = _spec(PROBE, runtime_image_tag, memory_size=96 * 1024 * 1024, cpu=500)
    outcome = await _execute(backend, spec, package)
    assert outcome.status is OutcomeStatus.SUCCESS, outcome
    probe = outcome.result
    assert (probe["uid"], probe["gid"]) == (10001, 10001)
    assert probe["write_etc"].startswith("OSError: [Errno 30] Read-only file system")
    assert probe["write_tmp"] == "ok"
    assert probe["interfaces"] == ["lo"]
    assert probe["connect"] != "ok"

    [container] = _node_containers(docker_client, node_id)
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == 96 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 256
    assert host["LogConfig"]["Type"] == "none"
    assert "/tmp" in host["Tmpfs"]
    assert container.attrs["Config"]["User"] == "10001:10001"
    labels = container.labels
    assert labels["spinlet.node"] == node_id
    assert labels["spinlet.function"] == spec.function_id
    assert labels["spinlet.version"] == "1"
    assert labels["spinlet.pool_key"]
    assert outcome.image_id == container.attrs["Image"]


async def test_a_missing_image_is_a_platform_error(backend: PoolBackend) -> None:
    spec, package = _spec(SLEEPS, "spinlet/no-such-runtime:0")
    with pytest.raises(ImageMissing, match="spinlet runtimes build") as missing:
        await _execute(backend, spec, package, 0)
    assert missing.value.image == "spinlet/no-such-runtime:0"
    assert await backend.image_id("spinlet/no-such-runtime:0") is None
