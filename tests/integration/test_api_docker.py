"""The API's whole path with functions in real Docker containers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.api.keys import SETTINGS
from spinlet.settings import Settings
from tests.helpers import eventually
from tests.integration.test_api import create, expect_error, run

Client = TestClient[Any, Any]

pytestmark = pytest.mark.docker

HOG = b"""
def main(event):
    chunks = []
    while True:
        chunks.append(bytearray(8 * 1024 * 1024))
"""

SPIN = b"""
import signal

def main(event):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.alarm(1)
    while True:
        pass
"""

OUTPUT = b"""
import os, subprocess, sys

def main(event, context):
    print("from print")
    sys.stderr.write("from stderr\\n")
    os.write(1, b"from os.write\\n")
    subprocess.run(["echo", "from a child"], check=True)
    return context.execution_id
"""


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    docker_client: Any,
) -> AsyncIterator[Client]:
    app = create_app(settings.evolve(backend="docker"))
    client = await aiohttp_client(app)
    yield client
    await client.close()
    left = docker_client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"spinlet.node={settings.node_id}"}
    )
    assert left == [], "containers left behind"


def containers_of(docker_client: Any, api: Client, function_id: str) -> list[str]:
    """The ids of the containers this node runs for a function, as Docker lists them."""
    node = api.server.app[SETTINGS].node_id
    labels = [f"spinlet.node={node}", f"spinlet.function={function_id}"]
    found = docker_client.containers.list(all=True, filters={"label": labels})
    return [str(container.id) for container in found]


async def upload(api: Client, name: str, code: bytes, **fields: str) -> None:
    body = aiohttp.FormData()
    body.add_field("name", name)
    for key, value in fields.items():
        body.add_field(key, value)
    body.add_field("package", code, filename=f"{name}.py")
    response = await api.post("/v1/functions", data=body)
    assert response.status == 201, await response.text()


async def test_hello_in_a_container(api: Client, docker_client: Any) -> None:
    await create(api, "hello")
    execution = await run(api, "hello", {"name": "Docker"})
    assert execution["status"] == "success", execution["error"]
    # The record names the container it ran in: the one Docker lists, idle now.
    assert containers_of(docker_client, api, execution["function_id"]) == [
        execution["container_id"]
    ]
    assert execution["result"] == {"greeting": "Hello, Docker!"}
    assert execution["image_id"].startswith("sha256:")
    assert execution["start_kind"] == "cold" and execution["init_ms"] > 0
    again = await run(api, "hello", {"name": "again"})
    assert (again["start_kind"], again["container_id"]) == ("warm", execution["container_id"])
    log = await (await api.get(f"/v1/executions/{execution['id']}/log")).text()
    assert log == "Hello, Docker!\n"


async def test_every_kind_of_output_is_in_the_log(api: Client) -> None:
    await upload(api, "output", OUTPUT)
    execution = await run(api, "output")
    assert execution["result"] == execution["id"]
    log = await (await api.get(f"/v1/executions/{execution['id']}/log")).text()
    lines = log.splitlines()
    # stdout and stderr are two pipes, each read as it fills: each keeps its own order (across
    # the two, the order is the node's reading order, as with `docker logs`).
    assert sorted(lines) == sorted(["from print", "from stderr", "from os.write", "from a child"])
    stdout = [line for line in lines if line != "from stderr"]
    assert stdout == ["from print", "from os.write", "from a child"]


async def test_a_busy_loop_is_stopped_at_its_timeout(api: Client) -> None:
    await upload(api, "spin", SPIN, timeout="2")
    started = time.monotonic()
    execution = await run(api, "spin")
    assert time.monotonic() - started < 20
    assert execution["status"] == "failed" and execution["status_reason"] == "timeout"
    assert "2" in execution["error"]["message"]


async def test_a_memory_hog_ends_as_oom(api: Client) -> None:
    await upload(api, "hog", HOG, memory_size=str(64 * 1024 * 1024))
    execution = await run(api, "hog")
    assert execution["status"] == "failed"
    assert execution["status_reason"] == "oom"


async def test_a_runtime_needs_an_existing_image(api: Client) -> None:
    response = await api.post(
        "/v1/runtimes", json={"name": "custom", "image": "spinlet/does-not-exist:1"}
    )
    assert "does-not-exist" in await expect_error(response, 400, "image_not_found")


async def test_an_execution_whose_runtime_image_is_gone_ends_as_no_image(
    api: Client, docker_client: Any, runtime_image_tag: str
) -> None:
    tag = f"spinlet/test-vanishing:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(runtime_image_tag).tag(tag)
    try:
        response = await api.post("/v1/runtimes", json={"name": "vanishing", "image": tag})
        assert response.status == 201, await response.text()
        runtime = await response.json()
        await upload(api, "orphan", b"def main(event):\n    return 1\n", runtime_id=runtime["id"])
    finally:
        docker_client.images.remove(tag)  # only the tag goes: the image stays for the others
    execution = await run(api, "orphan")
    assert (execution["status"], execution["status_reason"]) == ("error", "no_image")
    assert execution["error"]["type"] == "RuntimeBackendError"
    assert tag in execution["error"]["message"]


async def test_first_calls_take_stem_cells_and_later_ones_are_warm(api: Client) -> None:
    """The node keeps stem cells of the default limits from its start: a new function's first
    call only initialises one (start kind `stem`), the next call reuses its container."""

    async def stems_ready() -> bool:
        metrics = await (await api.get("/metrics")).text()
        return 'spinlet_containers{state="stem"} 2.0' in metrics

    await eventually(stems_ready, within=60)
    await create(api, "hello")
    first = await run(api, "hello", {"name": "stem"})
    assert (first["status"], first["start_kind"]) == ("success", "stem")
    assert first["init_ms"] is not None and first["init_ms"] > 0
    second = await run(api, "hello", {"name": "warm"})
    assert (second["start_kind"], second["init_ms"]) == ("warm", None)
    await eventually(stems_ready, within=60)  # the stem cell taken was replaced
    # Other limits have no stem cell: that first call creates its container.
    await create(api, "hello-big", "hello", memory_size=str(256 * 2**20))
    cold = await run(api, "hello-big", {"name": "cold"})
    assert cold["start_kind"] == "cold"


async def test_ready_once_the_engine_answers_and_the_runtime_image_is_there(
    api: Client, runtime_image_tag: str
) -> None:
    response = await api.get("/ready")
    assert (response.status, await response.json()) == (200, {"status": "ready"})


async def test_not_ready_without_the_runtime_image(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> None:
    missing = "spinlet/no-such-runtime:0"
    app = create_app(settings.evolve(backend="docker", runtime_image=missing, stem_cells=0))
    api = await aiohttp_client(app)
    response = await api.get("/ready")
    body = await response.json()
    assert response.status == 503, body
    assert body["error"]["code"] == "unavailable" and missing in body["error"]["message"]
    assert (await api.get("/health")).status == 200  # alive all the same


#: Prints a line (flushed, as `print` is unbuffered in the runtime), then ends badly: waits past
#: its timeout, waits to be cancelled, or eats memory until the kernel kills it.
ENDS_BADLY = b"""
import time

def main(event):
    print("started", event)
    if event == "hog":
        # What the kernel kills is the whole container: output still in a pipe, not yet read
        # by the runtime (the last milliseconds before the kill), is lost with it.
        time.sleep(0.2)
        chunks = []
        while True:
            chunks.append(bytearray(8 * 1024 * 1024))
    if event == "quick":
        return "quick"
    time.sleep(60)
"""


async def test_what_was_printed_before_a_timeout_is_in_the_log(
    api: Client, docker_client: Any
) -> None:
    await upload(api, "late", ENDS_BADLY, timeout="2")
    # Warm first: a cold start slower than the 2 s timeout (a loaded machine) would time out
    # while importing the code, before it printed anything.
    warm = await run(api, "late", "quick")
    assert warm["status"] == "success"
    [container] = containers_of(docker_client, api, warm["function_id"])
    execution = await run(api, "late", "slow")
    # It ran in the warm container, which the timeout destroyed: the record still names it.
    assert execution["container_id"] == container
    assert containers_of(docker_client, api, warm["function_id"]) == []
    assert (execution["status"], execution["status_reason"]) == ("failed", "timeout")
    log = await (await api.get(f"/v1/executions/{execution['id']}/log")).text()
    assert log == "started slow\n"
    assert execution["start_kind"] == "warm" and execution["duration_ms"] >= 2000


async def test_what_was_printed_before_an_oom_is_in_the_log(api: Client) -> None:
    await upload(api, "greedy", ENDS_BADLY, memory_size=str(64 * 1024 * 1024))
    execution = await run(api, "greedy", "hog")
    assert (execution["status"], execution["status_reason"]) == ("failed", "oom")
    log = await (await api.get(f"/v1/executions/{execution['id']}/log")).text()
    assert log == "started hog\n"
    assert execution["start_kind"] == "cold"
    assert len(execution["container_id"]) == 64  # a Docker container id, though gone now


async def test_what_was_printed_before_a_cancel_is_in_the_log(
    api: Client, docker_client: Any
) -> None:
    await upload(api, "patient", ENDS_BADLY)
    warm = await run(api, "patient", "quick")
    assert warm["status"] == "success"  # now warm
    [container] = containers_of(docker_client, api, warm["function_id"])
    response = await api.post(
        "/v1/executions", json={"function_id": "patient", "input": "waits", "sync": False}
    )
    queued = await response.json()

    async def running() -> bool:
        record = await (await api.get(f"/v1/executions/{queued['id']}")).json()
        return bool(record["status"] == "running")

    await eventually(running, within=30)
    # On a warm container the line is printed within milliseconds of the start; the execution
    # would sleep for a minute after it.
    await asyncio.sleep(3)
    response = await api.post(f"/v1/executions/{queued['id']}/cancel", json={"kill": True})
    cancelled = await response.json()
    assert cancelled["status"] == "cancelled", cancelled
    log = await (await api.get(f"/v1/executions/{queued['id']}/log")).text()
    assert log == "started waits\n"
    assert cancelled["start_kind"] == "warm" and cancelled["duration_ms"] >= 1000
    assert cancelled["container_id"] == container  # the container the cancel destroyed


async def follow_first_line(follower: Client, runner: Client, execution_id: str) -> None:
    """Follow the execution on `follower` until its first line arrives, check that it still
    runs (its function sleeps a minute after that line: the line came live), then cancel it on
    `runner` and check the followed log ends with the execution."""
    while True:  # once it is recorded
        response = await follower.get(f"/v1/executions/{execution_id}/log?follow=true")
        if response.status != 404:
            break
        await asyncio.sleep(0.05)
    assert response.status == 200, await response.text()
    assert await response.content.readline() == b"started waits\n"
    record = await (await follower.get(f"/v1/executions/{execution_id}")).json()
    assert record["status"] == "running"
    cancel = await runner.post(f"/v1/executions/{execution_id}/cancel", json={"kill": True})
    assert (await cancel.json())["status"] == "cancelled"
    assert await response.content.read() == b""  # the followed log ends with the execution


async def test_a_follower_reads_a_containers_output_while_it_runs(api: Client) -> None:
    await upload(api, "dripping", ENDS_BADLY)
    response = await api.post(
        "/v1/executions", json={"function_id": "dripping", "input": "waits", "sync": False}
    )
    await follow_first_line(api, api, (await response.json())["id"])


@pytest.mark.postgres
async def test_a_follower_on_another_node_reads_a_containers_output_while_it_runs(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    tmp_path: Any,
    fresh_postgres: str,
    docker_client: Any,
) -> None:
    """Two nodes on one PostgreSQL database: the first runs it in a container, the second is
    followed."""
    settings = settings.evolve(backend="docker", database_url=fresh_postgres)
    first = await aiohttp_client(create_app(settings))
    other = settings.evolve(node_id=f"other-{uuid.uuid4().hex[:8]}", data_dir=tmp_path / "o")
    second = await aiohttp_client(create_app(other))
    await upload(first, "dripping", ENDS_BADLY)
    execution_id = str(uuid.uuid4())
    body = {"id": execution_id, "function_id": "dripping", "input": "waits"}
    running = asyncio.create_task(first.post("/v1/executions", json=body))  # sync: runs there
    await follow_first_line(second, first, execution_id)
    assert (await running).status == 201
    await first.close()
    await second.close()
    for node in (settings.node_id, other.node_id):
        left = docker_client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"spinlet.node={node}"}
        )
        assert left == [], f"containers left behind by {node}"
