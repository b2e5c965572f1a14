"""Hostile functions in real containers, through the HTTP API, as their author would see them.

Each attack ends as a clean `failed` execution with a clear error (a log flood: as a success with
its log capped), and afterwards the node answers, another function runs, and so does the hostile
function itself again (each one answers `"ping"` politely).

The attacks on the runtime (a fork bomb, a memory bomb, a stdout flood, a busy loop past the
timeout, the process exiting) run in every shipped runtime (`shipped`: `tests/runtimes.py`);
those on the sandbox itself, in Python.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.settings import Settings
from tests.conftest import FUNCTIONS
from tests.helpers import make_package
from tests.runtimes import PIDS_EXHAUSTED, Shipped

Client = TestClient[Any, Any]

pytestmark = pytest.mark.docker

MiB = 1024 * 1024
LOG_LIMIT = 64 * 1024

#: Appended to every attack: the function answers "ping", and attacks on any other input.
POLITE = """
    def main(event):
        if event == "ping":
            return "pong"
        return attack(event)
"""

SPAWNER = """
    import subprocess

    def attack(event):
        children = []
        while True:
            children.append(subprocess.Popen(["sleep", "600"]))
"""

WRITER = """
    def attack(path):
        with open(path, "w") as file:
            file.write("evil")
"""

TMP_FILLER = """
    def attack(event):
        chunk = b"x" * (1024 * 1024)
        with open("/tmp/filler", "wb") as file:
            for _ in range(1024):  # far beyond the 64 MiB of /tmp
                file.write(chunk)
                file.flush()
        return "all written"
"""

DOCKER_SOCKET = """
    import socket

    def attack(path):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
        return "connected"
"""

ROOT = """
    import os, subprocess

    def status():
        with open("/proc/self/status") as file:
            fields = dict(line.split(":\\t", 1) for line in file.read().splitlines())
        return {key: fields[key].strip() for key in ("CapEff", "NoNewPrivs")}

    def attack(event):
        if event == "setuid":
            os.setuid(0)
        elif event == "setgid":
            os.setgid(0)
        elif event == "shadow":
            with open("/etc/shadow") as file:
                return file.read()
        elif event == "su":
            su = subprocess.run(
                ["su", "-c", "id", "root"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
            )
            return {"returncode": su.returncode, "stdout": su.stdout, "stderr": su.stderr}
        return {
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            **status(),
        }
"""


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    docker_client: Any,
    runtime_image_tag: str,
) -> AsyncIterator[Client]:
    """The API on the Docker backend (no stem cells), with `hello` deployed as a bystander."""
    app = create_app(
        settings.evolve(backend="docker", stem_cells=0, log_limit=LOG_LIMIT, keep_alive=60.0)
    )
    client = await aiohttp_client(app)
    body = aiohttp.FormData()
    body.add_field("name", "hello")
    body.add_field("package", (FUNCTIONS / "hello.py").read_bytes(), filename="hello.py")
    response = await client.post("/v1/functions", data=body)
    assert response.status == 201, await response.text()
    yield client
    # Every execution ended, as the function's success or failure: none is still queued or
    # running, and none ended as the platform's fault (`error`).
    others = await client.get("/v1/executions", params={"status": "nin:success,failed"})
    assert others.status == 200
    assert (await others.json())["executions"] == []
    await client.close()
    left = docker_client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"spinlet.node={settings.node_id}"}
    )
    assert left == [], "containers left behind"


async def deploy(api: Client, name: str, attack: str | bytes, **fields: str) -> None:
    """A function that runs `attack(event)` (defined in the Python source `attack`), or
    answers "ping"; or the package `attack` (`Shipped.package`), with its `runtime_id`."""
    body = aiohttp.FormData()
    body.add_field("name", name)
    for key, value in fields.items():
        body.add_field(key, value)
    package = attack if isinstance(attack, bytes) else make_package(attack + POLITE)
    body.add_field("package", package, filename="package.zip")
    response = await api.post("/v1/functions", data=body)
    assert response.status == 201, await response.text()


async def run(api: Client, function: str, input: Any = None) -> dict[str, Any]:
    response = await api.post("/v1/executions", json={"function_id": function, "input": input})
    assert response.status == 201, await response.text()
    execution: dict[str, Any] = await response.json()
    assert execution["status"] in ("success", "failed"), execution
    return execution


async def log_of(api: Client, execution: dict[str, Any]) -> str:
    response = await api.get(f"/v1/executions/{execution['id']}/log")
    assert response.status == 200
    return await response.text()


async def say_hello(api: Client) -> None:
    """The bystander function runs."""
    hello = await run(api, "hello", {"name": "neighbour"})
    assert (hello["status"], hello["result"]) == ("success", {"greeting": "Hello, neighbour!"})


async def still_works(api: Client, function: str, *, start_kind: str | None = None) -> None:
    """The node answers, the bystander runs, and `function` answers "ping" again (on a container
    of `start_kind`, when given)."""
    assert (await api.get("/health")).status == 200
    _, ping = await asyncio.gather(say_hello(api), run(api, function, "ping"))
    assert (ping["status"], ping["result"], ping["error"]) == ("success", "pong", None)
    if start_kind is not None:
        assert ping["start_kind"] == start_kind


def on(shipped: Shipped) -> dict[str, str]:
    """The fields that put a function on `shipped`."""
    return {"runtime_id": shipped.name}


def error_of(execution: dict[str, Any], status_reason: str) -> dict[str, Any]:
    assert execution["status"] == "failed", execution
    assert execution["status_reason"] == status_reason, execution["error"]
    error: dict[str, Any] = execution["error"]
    return error


async def test_a_fork_bomb_hits_the_pids_limit(api: Client, shipped: Shipped) -> None:
    """Forking (every child forking too) until the pids limit refuses: the function sees
    EAGAIN. Its forked children never answer in the server's place, and what it left behind
    (sleeping children, zombies) is ended when the next execution finds no pid left, so that
    the same warm container serves the next executions. Memory to spare: the limit hit is the
    pids one."""
    package = shipped.package("fork bomb")
    await deploy(api, "forks", package, timeout="30", memory_size=str(512 * MiB), **on(shipped))
    error = error_of(await run(api, "forks"), "exception")
    assert re.search(PIDS_EXHAUSTED[shipped.language], error["message"]), error
    await still_works(api, "forks", start_kind="warm")
    await still_works(api, "forks", start_kind="warm")


async def test_spawning_subprocesses_hits_the_pids_limit(api: Client) -> None:
    """The same with children that sleep (the Python runtime's own behaviour: `fork` there)."""
    await deploy(api, "spawner", SPAWNER, timeout="30", memory_size=str(512 * MiB))
    error = error_of(await run(api, "spawner"), "exception")
    assert error["type"] == "BlockingIOError"
    assert error["message"] == "[Errno 11] Resource temporarily unavailable"
    await still_works(api, "spawner", start_kind="warm")
    await still_works(api, "spawner", start_kind="warm")


async def test_a_memory_bomb_ends_as_out_of_memory(api: Client, shipped: Shipped) -> None:
    bomb = shipped.package("memory bomb")
    await deploy(api, "hog", bomb, memory_size=str(64 * MiB), **on(shipped))
    error = error_of(await run(api, "hog"), "oom")
    assert error["type"] == "OutOfMemory"
    assert "memory_size 64 MiB" in error["message"]
    await still_works(api, "hog", start_kind="cold")


async def test_a_cpu_spin_ends_at_its_timeout(api: Client, shipped: Shipped) -> None:
    """The spin takes its whole CPU quota; the bystander runs meanwhile all the same."""
    await deploy(api, "spin", shipped.package("spin"), timeout="3", cpu="500", **on(shipped))
    spin, _ = await asyncio.gather(run(api, "spin"), say_hello(api))
    error = error_of(spin, "timeout")
    assert error == {
        "type": "Timeout",
        "message": "execution exceeded its timeout of 3 s",
        "traceback": "",
    }
    await still_works(api, "spin", start_kind="cold")


async def test_the_process_exiting_ends_as_crashed(api: Client, shipped: Shipped) -> None:
    """The function ends the whole process at once (its runtime with it): the execution fails
    as `crashed`, and the next one gets a new container."""
    await deploy(api, "quitter", shipped.package("exit"), **on(shipped))
    error = error_of(await run(api, "quitter"), "crashed")
    assert error["type"] == "ContainerCrashed"
    await still_works(api, "quitter", start_kind="cold")


async def test_the_root_filesystem_cannot_be_written(api: Client) -> None:
    """New files anywhere, and the runtime's own server or /etc/passwd overwritten: each write
    fails as read-only, and the same container goes on serving."""
    await deploy(api, "writer", WRITER)
    for path in ("/etc/evil", "/usr/lib/evil.so", "/evil", "/etc/passwd", "/opt/spinlet/server.py"):
        error = error_of(await run(api, "writer", path), "exception")
        assert (error["type"], error["message"]) == (
            "OSError",
            f"[Errno 30] Read-only file system: '{path}'",
        )
    await still_works(api, "writer", start_kind="warm")


async def test_the_socket_directory_cannot_be_written(api: Client) -> None:
    """The runtime's socket lives in a host directory: once it listens, the function cannot
    create a file there (which would fill the host's disk beyond any limit)."""
    await deploy(api, "writer", WRITER)
    error = error_of(await run(api, "writer", "/run/spinlet/evil"), "exception")
    assert (error["type"], error["message"]) == (
        "PermissionError",
        "[Errno 13] Permission denied: '/run/spinlet/evil'",
    )


async def test_filling_tmp_fails_at_its_size_limit(api: Client) -> None:
    """/tmp is a 64 MiB tmpfs: the write that does not fit fails (within the memory limit)."""
    await deploy(api, "filler", TMP_FILLER, memory_size=str(128 * MiB))
    error = error_of(await run(api, "filler"), "exception")
    assert (error["type"], error["message"]) == ("OSError", "[Errno 28] No space left on device")
    await still_works(api, "filler", start_kind="warm")


def truncated(log: str) -> tuple[str, int, str]:
    """The head of a capped log, how many bytes its one marker says were dropped, its tail."""
    cut = re.fullmatch(
        r"(.*)\n\[spinlet: log truncated, (\d+) bytes dropped\]\n(.*)", log, flags=re.DOTALL
    )
    assert cut is not None, log[:200]
    assert "[spinlet: log truncated" not in cut[1] + cut[3]
    return cut[1], int(cut[2]), cut[3]


async def test_a_stdout_flood_is_capped_and_the_node_stays_responsive(
    api: Client, shipped: Shipped
) -> None:
    """256 MiB to stdout (the language's and a child's): the execution succeeds, its log keeps
    the first and the last `log_limit / 2` bytes at most with a marker between them, and the
    node answers and serves the bystander meanwhile."""
    await deploy(api, "flood", shipped.package("flood"), timeout="60", **on(shipped))
    flood, _, health = await asyncio.gather(
        run(api, "flood", 128), say_hello(api), api.get("/health")
    )
    assert health.status == 200
    assert (flood["status"], flood["result"]) == ("success", "flooded"), flood["error"]
    head, _, tail = truncated(await log_of(api, flood))
    assert head == ("y" * 1023 + "\n") * (LOG_LIMIT // 2048)
    assert tail == "\ufffd" * len(tail)  # the child's NULs
    assert len(head.encode()) + len(tail.encode()) <= LOG_LIMIT
    await still_works(api, "flood", start_kind="warm")


async def test_a_truncated_log_says_how_much_was_dropped(api: Client) -> None:
    """The runtime streams all of it (protocol v2) and the node keeps the head and the tail
    (a NUL becomes U+FFFD, 3 bytes of the log): one marker, counting the log's bytes dropped."""
    await deploy(api, "flood", Shipped("python3", "", "python").package("flood"))
    flood = await run(api, "flood", 1)
    head, dropped, tail = truncated(await log_of(api, flood))
    assert head == ("y" * 1023 + "\n") * (LOG_LIMIT // 2048)
    assert tail == "\ufffd" * len(tail)
    whole = MiB + 3 * MiB  # 1 MiB of lines, then 1 MiB of NULs as U+FFFD
    assert dropped == whole - len(head.encode()) - len(tail.encode())


async def test_the_docker_socket_is_not_there(api: Client) -> None:
    await deploy(api, "escape", DOCKER_SOCKET)
    for path in ("/var/run/docker.sock", "/run/docker.sock"):
        error = error_of(await run(api, "escape", path), "exception")
        assert (error["type"], error["message"]) == (
            "FileNotFoundError",
            "[Errno 2] No such file or directory",
        )
    await still_works(api, "escape", start_kind="warm")


async def test_the_function_cannot_become_root(api: Client) -> None:
    await deploy(api, "root", ROOT)
    setuid, setgid, shadow = [
        error_of(await run(api, "root", attempt), "exception")
        for attempt in ("setuid", "setgid", "shadow")
    ]
    assert (setuid["type"], setuid["message"]) == (
        "PermissionError",
        "[Errno 1] Operation not permitted",
    )
    assert (setgid["type"], setgid["message"]) == (
        "PermissionError",
        "[Errno 1] Operation not permitted",
    )
    assert (shadow["type"], shadow["message"]) == (
        "PermissionError",
        "[Errno 13] Permission denied: '/etc/shadow'",
    )
    su = (await run(api, "root", "su"))["result"]
    assert (su["returncode"], su["stdout"]) == (1, "")
    assert "su: Authentication failure" in su["stderr"]
    whoami = await run(api, "root", "whoami")
    assert whoami["result"] == {
        "uid": 10001,
        "euid": 10001,
        "gid": 10001,
        "groups": [10001],
        "CapEff": "0000000000000000",
        "NoNewPrivs": "1",
    }
    await still_works(api, "root", start_kind="warm")
