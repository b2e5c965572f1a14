"""The runtime conformance suite (`conformance.py`): it passes on the runtimes Spinlet ships,
and says what is wrong with a runtime that is not one.

The Docker tests run it on real images, in the sandbox functions get; the process ones on
runtime servers started as local processes (fast, and any server can be put in place)."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from spinlet.errors import ImageMissing
from spinlet.paths import runtimes_dir
from spinlet.runtime.conformance import CHECKS, CPU, MEMORY_SIZE, QUICK, Report, check_image
from spinlet.runtime.docker_driver import DockerDriver
from spinlet.runtime.driver import SandboxShape
from spinlet.runtime.process_driver import ProcessDriver
from spinlet.runtime.protocol import MAX_PROTOCOL
from tests.integration.runtime.test_protocol_version import fake_runtime
from tests.runtimes import Shipped

#: Servers that are no runtime, put in the process driver's place.
EXITS = """
import sys
print("starting")
print("fatal: no configuration", file=sys.stderr, flush=True)
sys.exit(3)
"""
SLEEPS = "import time\ntime.sleep(600)\n"
#: A server of protocol 99 only (an image of another release, or of someone else's making).
OTHER_PROTOCOL = """
import sys
sys.path.insert(0, {path!r})
import server
server.PROTOCOL = 99
server.PROTOCOLS = (99,)
server.main()
"""


def table(report: Report) -> dict[str, tuple[bool, str]]:
    return {result.name: (result.passed, result.reason) for result in report.results}


@pytest.fixture
async def process_driver(socket_root: Path) -> AsyncIterator[ProcessDriver]:
    driver = ProcessDriver(socket_root, node_id=f"test-{uuid.uuid4().hex[:8]}")
    yield driver
    await driver.close()
    assert await driver.list_leftovers() == []


def serving(driver: ProcessDriver, directory: Path, source: str) -> None:
    directory.mkdir(exist_ok=True)
    script = directory / "server.py"
    script.write_text(textwrap.dedent(source))
    driver.server = script


async def test_the_python_server_passes_every_check(process_driver: ProcessDriver) -> None:
    report = await check_image(process_driver, "any")
    assert [(r.name, r.passed) for r in report.results] == [(name, True) for name in CHECKS]
    assert report.passed and report.summary() == ""
    assert report.language == "python"
    reasons = table(report)
    assert reasons["health"][1] == "answers /health: protocol 1, features: code_dir, layer_dir"
    assert reasons["timeout"][1].startswith("still busy at its 1 s deadline")


async def test_the_quick_check_is_health_init_and_run(process_driver: ProcessDriver) -> None:
    report = await check_image(process_driver, "any", checks=QUICK)
    assert [result.name for result in report.results] == ["health", "init", "run"]
    assert report.passed


async def test_a_server_that_exits_at_once_says_its_status_and_last_words(
    process_driver: ProcessDriver, tmp_path: Path
) -> None:
    serving(process_driver, tmp_path, EXITS)
    report = await check_image(process_driver, "any", checks=QUICK)
    assert not report.passed
    passed, reason = table(report)["health"]
    assert not passed
    assert reason.startswith("the runtime exits at once, after ")
    assert reason.endswith("(exit status 3); its last output: fatal: no configuration | starting")
    assert table(report)["init"] == (False, "not run: health failed")
    assert table(report)["run"] == (False, "not run: health failed")


async def test_nothing_on_the_socket_is_no_server(
    process_driver: ProcessDriver, tmp_path: Path
) -> None:
    serving(process_driver, tmp_path, SLEEPS)
    report = await check_image(process_driver, "any", checks=QUICK, ready_timeout=1.0)
    assert table(report)["health"] == (
        False,
        "no server on the socket: nothing answered GET /health on $SPINLET_SOCKET "
        "(/run/spinlet/rt.sock in a container) within 1 s",
    )


async def test_another_protocol_version_is_refused_at_health(
    process_driver: ProcessDriver, tmp_path: Path
) -> None:
    serving(process_driver, tmp_path, OTHER_PROTOCOL.format(path=str(runtimes_dir() / "python")))
    report = await check_image(process_driver, "any", checks=QUICK)
    assert table(report)["health"] == (
        False,
        "wrong protocol version: /health says protocols [99], this node speaks protocols 1 to 2",
    )


async def test_another_protocol_version_agreed_at_init_is_refused(
    process_driver: ProcessDriver, tmp_path: Path
) -> None:
    """A server whose /health looks right but agrees to a version the node never offered."""
    process_driver.server = fake_runtime(tmp_path, MAX_PROTOCOL + 1, ("code_dir",))
    report = await check_image(process_driver, "any", checks=QUICK)
    assert table(report)["health"][0]
    assert table(report)["init"] == (
        False,
        f"wrong protocol version: /init agreed protocol {MAX_PROTOCOL + 1}, this node speaks "
        "protocols 1 to 2",
    )
    assert table(report)["run"] == (False, "not run: init failed")


async def test_unknown_checks_are_refused(process_driver: ProcessDriver) -> None:
    with pytest.raises(ValueError, match="unknown checks"):
        await check_image(process_driver, "any", checks=["health", "speed"])


# -- in Docker -------------------------------------------------------------------------------


@pytest.fixture
async def docker_driver(docker_client: Any, socket_root: Path) -> AsyncIterator[DockerDriver]:
    node_id = f"test-{uuid.uuid4().hex[:8]}"
    driver = DockerDriver(node_id, socket_root, client=docker_client)
    yield driver
    await driver.close()
    left = docker_client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"spinlet.node={node_id}"}
    )
    assert left == [], "containers left behind"


@pytest.mark.docker
async def test_every_shipped_runtime_passes_the_suite(
    docker_driver: DockerDriver, shipped: Shipped
) -> None:
    report = await check_image(docker_driver, shipped.image)
    assert report.passed, report.summary()
    assert [result.name for result in report.results] == list(CHECKS)
    assert report.language == shipped.language


@pytest.mark.docker
async def test_an_image_without_a_server_exits_at_once(
    docker_driver: DockerDriver, runtime_image_tag: str
) -> None:
    """The bootstrapped base: its command is `python3`, which exits at once without input."""
    from spinlet.runtime.images import BOOTSTRAP_BASE

    report = await check_image(docker_driver, BOOTSTRAP_BASE, checks=QUICK)
    passed, reason = table(report)["health"]
    assert not passed
    assert reason.startswith("the runtime exits at once")
    assert reason.endswith("(exit status 0), without output")


@pytest.mark.docker
async def test_a_missing_image_is_not_checked(docker_driver: DockerDriver) -> None:
    with pytest.raises(ImageMissing):
        await check_image(docker_driver, "spinlet/no-such-image:0")


@pytest.mark.docker
async def test_the_checked_container_is_a_functions_sandbox_that_keeps_its_output(
    docker_driver: DockerDriver, docker_client: Any, runtime_image_tag: str
) -> None:
    """The suite's container is made as a function's (`keep_output` changes its log driver
    only), so an image that passes runs the same way for functions."""
    image_id = await docker_driver.image_id(runtime_image_tag)
    assert image_id is not None
    shape = SandboxShape(image_id, MEMORY_SIZE, CPU)
    checked = await docker_driver.create(shape, keep_output=True)
    plain = await docker_driver.create(shape)
    try:
        configs = [docker_client.api.inspect_container(sandbox.id) for sandbox in (checked, plain)]
    finally:
        await docker_driver.destroy(checked)
        await docker_driver.destroy(plain)
    hosts = [config["HostConfig"] for config in configs]
    assert [host.pop("LogConfig")["Type"] for host in hosts] == ["json-file", "none"]
    for host in hosts:  # the socket and code directories are each sandbox's own
        host.pop("Binds")
    assert hosts[0] == hosts[1]
    assert hosts[0]["ReadonlyRootfs"] is True
    assert hosts[0]["CapDrop"] == ["ALL"]
    assert configs[0]["Config"]["User"] == configs[1]["Config"]["User"] == "10001:10001"
