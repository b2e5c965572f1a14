"""Limits that agree with what runs: the node's CPUs and memory, the unpacked package, the entry.

Each is refused when a function is created or updated, naming the limit, instead of failing
every call later. Functions run as local processes, and in real containers where the limit is
the engine's.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.packages import MAX_UNPACKED_SIZE, PAGE_SIZE
from spinlet.settings import Settings
from tests.conftest import FUNCTIONS
from tests.helpers import make_package
from tests.integration.test_api import create, expect_error, form, run

Client = TestClient[Any, Any]
MiB = 1024 * 1024
#: The bounds of every node (the node's engine may allow less).
MAX_CPU, MAX_MEMORY = 64000, 16384 * MiB


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
async def node(
    request: pytest.FixtureRequest,
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
) -> tuple[Client, int, int]:
    """The API on each backend, with the most CPU (millicores) and memory (bytes) its node
    has, as `docker info` (or the machine itself) shows them."""
    if request.param == "docker":
        info = request.getfixturevalue("docker_client").info()
        cpu, memory = info["NCPU"] * 1000, info["MemTotal"]
    else:
        cpu = len(os.sched_getaffinity(0)) * 1000
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    api = await aiohttp_client(create_app(settings.evolve(backend=request.param)))
    return api, min(cpu, MAX_CPU), min(memory, MAX_MEMORY)


async def test_cpu_above_the_nodes_is_refused_naming_its_maximum(
    node: tuple[Client, int, int],
) -> None:
    api, top_cpu, _ = node
    response = await api.post(
        "/v1/functions", data=form("greedy", FUNCTIONS / "echo.py", cpu=str(top_cpu + 1))
    )
    message = await expect_error(response, 400, "validation_error")
    assert f"at most {top_cpu} millicores" in message
    assert (await (await api.get("/v1/functions")).json())["functions"] == []
    # All of the node's CPUs is fine, and runs.
    await create(api, "all-cpus", "echo", cpu=str(top_cpu))
    assert (await run(api, "all-cpus", "ok"))["result"] == "ok"
    # An update above it is refused and changes nothing.
    response = await api.put("/v1/functions/all-cpus", json={"cpu": top_cpu + 1})
    assert f"at most {top_cpu}" in await expect_error(response, 400, "validation_error")
    assert (await (await api.get("/v1/functions/all-cpus")).json())["cpu"] == top_cpu
    assert (await run(api, "all-cpus", "still"))["result"] == "still"


async def test_memory_above_the_nodes_is_refused_naming_its_maximum(
    node: tuple[Client, int, int],
) -> None:
    api, _, top_memory = node
    response = await api.post(
        "/v1/functions",
        json={
            "name": "huge",
            "package": "ZGVmIG1haW4oZSk6IHJldHVybiBlCg==",  # def main(e): return e
            "filename": "huge.py",
            "memory_size": top_memory + 1,
        },
    )
    message = await expect_error(response, 400, "validation_error")
    assert f"at most {top_memory} bytes" in message
    await create(api, "small", "echo")
    response = await api.put("/v1/functions/small", json={"memory_size": top_memory + 1})
    assert f"at most {top_memory} bytes" in await expect_error(response, 400, "validation_error")
    response = await api.put("/v1/functions/small", json={"memory_size": 15 * MiB})
    assert "at least 16 MiB" in await expect_error(response, 400, "validation_error")
    assert (await (await api.get("/v1/functions/small")).json())["memory_size"] == 128 * MiB


def filling(size: int) -> bytes:
    """A package whose files take `size` bytes in whole pages: `main.py` (one page) returns
    the size of `fill.bin`, which takes the rest."""
    source = (
        b"from pathlib import Path\n\n"
        b"def main(event):\n"
        b"    return (Path(__file__).parent / 'fill.bin').stat().st_size\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.py", source)
        archive.writestr("fill.bin", b"\0" * (size - PAGE_SIZE))
    return buffer.getvalue()


async def test_a_package_over_the_unpacked_limit_is_refused_naming_it(
    process_api: Client,
) -> None:
    api = process_api
    # A small zip (270 KB) that unpacks to 270 MB.
    data = filling(270 * 1000 * 1000)
    assert len(data) < 300 * 1000
    response = await api.post("/v1/functions", data=form("bomb", data=data))
    message = await expect_error(response, 413, "too_large")
    assert f"the limit is {MAX_UNPACKED_SIZE} bytes (250 MiB)" in message
    # One byte over, counted in pages (one page more), is refused on update too.
    await create(api, "fits", "echo")
    response = await api.put("/v1/functions/fits", data=form("fits", data=filling(250 * MiB + 1)))
    assert "250 MiB" in await expect_error(response, 413, "too_large")
    assert (await run(api, "fits", "echo"))["result"] == "echo"


@pytest.mark.docker
async def test_a_package_of_exactly_the_unpacked_limit_runs_in_a_container(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    docker_client: Any,
) -> None:
    """The container's code directory, filled by the node, holds what the upload accepts."""
    api = await aiohttp_client(create_app(settings.evolve(backend="docker")))
    response = await api.post("/v1/functions", data=form("full", data=filling(MAX_UNPACKED_SIZE)))
    assert response.status == 201, await response.text()
    execution = await run(api, "full")
    assert execution["status"] == "success", (execution["status_reason"], execution["error"])
    assert execution["result"] == MAX_UNPACKED_SIZE - PAGE_SIZE


async def test_an_entry_is_checked_on_update_with_new_code_or_a_new_entry(
    process_api: Client,
) -> None:
    api = process_api
    await create(api, "greeter", "hello")
    response = await api.put("/v1/functions/greeter", json={"entry": "hello.greet"})
    assert "does not define 'greet'" in await expect_error(response, 400, "invalid_entry")
    response = await api.put("/v1/functions/greeter", json={"entry": "greet.main"})
    assert "module 'greet'" in await expect_error(response, 400, "invalid_entry")
    # New code without the current entry's function (hello.main) is refused.
    other = make_package("def handle(event):\n    return 'new'\n", module="hello")
    response = await api.put("/v1/functions/greeter", data=form("greeter", data=other))
    assert "hello.py does not define 'main'" in await expect_error(response, 400, "invalid_entry")
    # With the entry that names it, the same code is accepted and runs.
    response = await api.put(
        "/v1/functions/greeter", data=form("greeter", data=other, entry="hello.handle")
    )
    assert response.status == 200, await response.text()
    assert (await run(api, "greeter"))["result"] == "new"
