"""Registering a runtime image checks it first: an image that is no Spinlet runtime is refused
(`400 invalid_runtime`, saying what failed) and nothing is registered; one that passes is.
`spinlet runtimes check IMAGE` runs the whole suite on this machine's Docker."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.keys import SERVICES
from spinlet.paths import runtimes_dir
from spinlet.runtime.conformance import CHECKS, check_image
from spinlet.runtime.docker_driver import DockerDriver
from spinlet.runtime.images import BOOTSTRAP_BASE
from tests.conftest import REPO
from tests.integration.test_api import expect_error

Client = TestClient[Any, Any]

#: An image whose server speaks protocol 99 only: the shipped server, told so.
OTHER_PROTOCOL = """\
FROM {base}
COPY v99.py /opt/spinlet/v99.py
CMD ["python3", "/opt/spinlet/v99.py"]
"""
V99 = """\
import sys
sys.path.insert(0, "/opt/spinlet")
import server
server.PROTOCOL = 99
server.PROTOCOLS = (99,)
server.main()
"""


def build(client: Any, context: Path, files: dict[str, str]) -> str:
    """Build an image of `files` (a Dockerfile among them) under a fresh tag; return it."""
    context.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (context / name).write_text(text)
    tag = f"spinlet/test-runtime-check:{uuid.uuid4().hex[:8]}"
    client.images.build(path=str(context), tag=tag, pull=False, rm=True)
    return tag


@pytest.fixture
def other_protocol_image(
    docker_client: Any, runtime_image_tag: str, tmp_path: Path
) -> Iterator[str]:
    tag = build(
        docker_client,
        tmp_path / "v99",
        {"Dockerfile": OTHER_PROTOCOL.format(base=runtime_image_tag), "v99.py": V99},
    )
    yield tag
    docker_client.images.remove(tag)


@pytest.fixture
def runtime_copy(docker_client: Any, runtime_image_tag: str) -> Iterator[str]:
    """Another tag of the shipped runtime image (only the tag goes afterwards)."""
    tag = f"spinlet/test-runtime-copy:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(runtime_image_tag).tag(tag)
    yield tag
    docker_client.images.remove(tag)


async def refused(api: Client, name: str, image: str) -> tuple[str, list[dict[str, Any]]]:
    """Registering `image` as `name` is refused; nothing is registered. The message and the
    checks the answer lists."""
    response = await api.post("/v1/runtimes", json={"name": name, "image": image})
    body = await response.json()
    message = await expect_error(response, 400, "invalid_runtime")
    assert message.startswith(f"image {image!r} is not a Spinlet runtime: health: ")
    assert message.endswith(f"(`spinlet runtimes check {image}` runs every check)")
    await expect_error(await api.get(f"/v1/runtimes/{name}"), 404, "not_found")
    checks: list[dict[str, Any]] = body["error"]["checks"]
    return message, checks


@pytest.mark.docker
async def test_an_image_without_a_server_is_refused(docker_api: Client) -> None:
    message, checks = await refused(docker_api, "bare", BOOTSTRAP_BASE)
    assert "the runtime exits at once" in message
    assert "(exit status 0), without output" in message
    assert [(c["name"], c["passed"]) for c in checks] == [
        ("health", False),
        ("init", False),
        ("run", False),
    ]
    assert checks[1]["reason"] == "not run: health failed"


@pytest.mark.docker
async def test_an_image_of_another_protocol_version_is_refused(
    docker_api: Client, other_protocol_image: str
) -> None:
    message, _ = await refused(docker_api, "v99", other_protocol_image)
    assert "health: wrong protocol version: /health says protocols [99], this node speaks" in (
        message
    )


@pytest.mark.docker
async def test_a_runtime_image_is_accepted_and_an_image_change_is_checked(
    docker_api: Client, runtime_copy: str
) -> None:
    response = await docker_api.post("/v1/runtimes", json={"name": "mine", "image": runtime_copy})
    assert response.status == 201, await response.text()
    assert (await response.json())["status"] == "available"
    changed = await docker_api.put("/v1/runtimes/mine", json={"image": BOOTSTRAP_BASE})
    message = await expect_error(changed, 400, "invalid_runtime")
    assert "the runtime exits at once" in message
    kept = await (await docker_api.get("/v1/runtimes/mine")).json()
    assert kept["image"] == runtime_copy


async def test_an_image_is_checked_once_per_image_id(process_api: Client) -> None:
    """On the process backend every function runs the node's own Python server, whatever the
    image: that is what is checked, and once for every image (they are all that one)."""
    backend = process_api.server.app[SERVICES].backend
    checked: list[str] = []
    check = backend.check_runtime

    async def counting(image: str, checks: Any) -> Any:
        checked.append(image)
        return await check(image, checks)

    backend.check_runtime = counting  # type: ignore[method-assign]
    for name in ("first", "second"):
        response = await process_api.post("/v1/runtimes", json={"name": name, "image": f"x/{name}"})
        assert response.status == 201, await response.text()
    assert checked == ["x/first"]


# -- the command line ------------------------------------------------------------------------


def spinlet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "spinlet"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.docker
def test_check_passes_on_the_shipped_image(runtime_image_tag: str) -> None:
    done = spinlet("runtimes", "check", runtime_image_tag)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("health", "init", "run", "error", "log capture", "result too large", "timeout"):
        assert f"│ {name}" in done.stdout
    assert "FAIL" not in done.stdout
    assert "all 7 checks passed" in done.stdout


@pytest.mark.docker
def test_check_fails_on_an_image_without_a_server(runtime_image_tag: str) -> None:
    done = spinlet("runtimes", "check", BOOTSTRAP_BASE)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the runtime exits at once" in done.stdout
    assert "not run: health failed" in done.stdout
    assert "7 of 7 checks failed" in done.stdout
    as_json = spinlet("--json", "runtimes", "check", BOOTSTRAP_BASE)
    assert as_json.returncode == 1
    assert '"passed": false' in as_json.stdout


@pytest.mark.docker
def test_check_of_a_missing_image_is_one_line(docker_client: Any) -> None:
    done = spinlet("runtimes", "check", "spinlet/no-such-image:0")
    assert done.returncode == 1
    missing = "image 'spinlet/no-such-image:0' is not present on this node"
    assert done.stderr.strip() == f"error: {missing}"
    assert "Traceback" not in done.stderr


def readme_dockerfile() -> str:
    """The Dockerfile recipe of runtimes/README.md ("Spinlet's Python server in an image you
    already have")."""
    text = (REPO / "runtimes" / "README.md").read_text()
    section = text.split("<!-- byo-dockerfile:start -->", 1)[1].split("<!-- byo-dockerfile:end")[0]
    [block] = re.findall(r"```dockerfile\n(.*?)```", section, flags=re.DOTALL)
    return block


@pytest.mark.docker
async def test_the_readme_recipe_makes_a_runtime_of_an_image(
    docker_client: Any, runtime_image_tag: str, tmp_path: Path
) -> None:
    """Spinlet's Python server added to an image that has Python and nothing of Spinlet's (the
    bootstrapped base): it passes the whole suite."""
    recipe = readme_dockerfile()
    assert recipe.count("\nFROM ") == 1 or recipe.startswith("FROM ")
    ours = re.sub(r"^FROM .*$", f"FROM {BOOTSTRAP_BASE}", recipe, count=1, flags=re.MULTILINE)
    server = (runtimes_dir() / "python" / "server.py").read_text()
    tag = build(docker_client, tmp_path / "byo", {"Dockerfile": ours, "server.py": server})
    socket_root = Path(tempfile.mkdtemp(prefix="spl-"))  # short: a Unix socket's path
    driver = DockerDriver(f"test-{uuid.uuid4().hex[:8]}", socket_root, client=docker_client)
    try:
        report = await check_image(driver, tag)
    finally:
        await driver.close()
        docker_client.images.remove(tag)
        shutil.rmtree(socket_root, ignore_errors=True)
    assert report.passed, report.summary()
    assert (report.language, len(report.results)) == ("python", len(CHECKS))
