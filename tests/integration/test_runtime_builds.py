"""Shipped runtimes not built on a node yet: their statuses, first use and building on demand.

The functions run as local processes; only where the shipped runtimes' images come from is
replaced (`Images`), so that a build can be held, finished or failed when the test says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.api.keys import SERVICES
from spinlet.domain import Role
from spinlet.errors import RuntimeBackendError
from spinlet.runtime.catalog import ShippedRuntime
from spinlet.settings import Settings
from tests.helpers import eventually, make_package, zipped
from tests.integration.test_api import expect_error, form

Client = TestClient[Any, Any]
ECHO = "def main(event):\n    return event\n"
NODE_ECHO = "module.exports.main = async (event) => event;\n"


class Images:
    """The images of shipped runtimes: `python3`'s is here; a build of another one lasts
    until `finish` (it fails with `failure`), and from then on ends at once, until `hold`."""

    def __init__(self) -> None:
        self.built = {"python3"}
        self.builds: list[str] = []
        self.release = asyncio.Event()
        self.failure: str | None = None

    async def present(self, runtime: ShippedRuntime) -> bool:
        return runtime.name in self.built

    async def build(self, runtime: ShippedRuntime, progress: Any, rebuild: bool) -> None:
        self.builds.append(runtime.name)
        progress(f"building {runtime.image}")
        await self.release.wait()
        if self.failure is not None:
            raise RuntimeBackendError(self.failure)
        self.built.add(runtime.name)

    def finish(self, failure: str | None = None) -> None:
        self.failure = failure
        self.release.set()

    def hold(self) -> None:
        self.release = asyncio.Event()


@pytest.fixture
def images() -> Images:
    return Images()


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    images: Images,
) -> Client:
    return await aiohttp_client(create_app(settings.evolve(backend="process"), images=images))


async def statuses(api: Client) -> dict[str, str]:
    listed = (await (await api.get("/v1/runtimes")).json())["runtimes"]
    return {runtime["name"]: runtime["status"] for runtime in listed}


async def status_becomes(api: Client, name: str, wanted: str) -> dict[str, Any]:
    record: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal record
        record = await (await api.get(f"/v1/runtimes/{name}")).json()
        return bool(record["status"] == wanted)

    await eventually(reached)
    return record


async def test_every_shipped_runtime_is_offered_and_says_whether_it_is_built_here(
    api: Client, images: Images
) -> None:
    assert await statuses(api) == {
        "python3": "available",
        "python3.13": "not_built",
        "nodejs20": "not_built",
    }
    listed = (await (await api.get("/v1/runtimes")).json())["runtimes"]
    assert all(rt["is_public"] for rt in listed)
    assert {rt["image"] for rt in listed} == {
        "spinlet/runtime-python3:1",
        "spinlet/runtime-python3.13:1",
        "spinlet/runtime-nodejs20:1",
    }
    assert images.builds == []  # nothing is built at start


async def test_the_build_route_builds_in_the_background(api: Client, images: Images) -> None:
    response = await api.post("/v1/runtimes/python3.13/build")
    assert response.status == 202
    assert (await response.json())["status"] == "building"
    again = await (await api.post("/v1/runtimes/python3.13/build")).json()
    assert again["status"] == "building"
    assert images.builds == ["python3.13"]  # one build at a time
    assert (await statuses(api))["python3.13"] == "building"
    images.finish()
    await status_becomes(api, "python3.13", "available")
    done = await api.post("/v1/runtimes/python3.13/build")
    assert (done.status, (await done.json())["status"]) == (202, "available")
    assert images.builds == ["python3.13"]  # nothing more to do


async def test_a_failed_build_is_an_error_with_its_reason_and_can_be_tried_again(
    api: Client, images: Images
) -> None:
    await api.post("/v1/runtimes/nodejs20/build")
    images.finish("no runtime Dockerfile in runtimes/nodejs")
    record = await status_becomes(api, "nodejs20", "error")
    assert record["status_message"] == "no runtime Dockerfile in runtimes/nodejs"
    images.hold()
    assert (await (await api.post("/v1/runtimes/nodejs20/build")).json())["status"] == "building"
    images.finish()
    await status_becomes(api, "nodejs20", "available")


async def test_a_registered_image_is_not_built_by_a_node(api: Client) -> None:
    response = await api.post("/v1/runtimes", json={"name": "custom", "image": "any:image"})
    assert response.status == 201
    message = await expect_error(await api.post("/v1/runtimes/custom/build"), 409, "not_buildable")
    assert "not one shipped" in message
    await expect_error(await api.post("/v1/runtimes/nope/build"), 404, "not_found")


async def test_first_use_builds_a_sync_call_is_refused_and_an_async_one_waits(
    api: Client, images: Images
) -> None:
    created = await api.post(
        "/v1/functions",
        data=form("echo313", data=make_package(ECHO), runtime_id="python3.13", timeout="1"),
    )
    assert created.status == 201, await created.text()
    assert images.builds == ["python3.13"]  # creating the function started it
    assert (await statuses(api))["python3.13"] == "building"

    refused = await api.post("/v1/executions", json={"function_id": "echo313", "input": 1})
    message = await expect_error(refused, 409, "runtime_not_ready")
    assert "being built" in message and "retry" in message
    assert refused.headers["Retry-After"] == "30"
    assert (await (await api.get("/v1/executions")).json())["executions"] == []  # nothing made

    queued = await api.post(
        "/v1/executions", json={"function_id": "echo313", "input": 2, "sync": False}
    )
    assert queued.status == 202
    execution_id = (await queued.json())["id"]
    await asyncio.sleep(1.5)  # longer than the function's timeout: the build does not count
    pending = await (await api.get(f"/v1/executions/{execution_id}")).json()
    assert pending["status"] in ("queued", "running")
    assert images.builds == ["python3.13"]

    images.finish()
    done = await (await api.get(f"/v1/executions/{execution_id}?wait=10")).json()
    assert (done["status"], done["result"]) == ("success", 2), done
    ran = await api.post("/v1/executions", json={"function_id": "echo313", "input": 3})
    assert ran.status == 201 and (await ran.json())["result"] == 3


async def test_an_async_execution_whose_runtime_cannot_be_built_says_why(
    api: Client, images: Images
) -> None:
    package = zipped({"main.js": NODE_ECHO})
    created = await api.post(
        "/v1/functions", data=form("echo20", data=package, runtime_id="nodejs20")
    )
    assert created.status == 201, await created.text()
    queued = await api.post("/v1/executions", json={"function_id": "echo20", "sync": False})
    execution_id = (await queued.json())["id"]
    images.finish("the base image could not be bootstrapped")
    done = await (await api.get(f"/v1/executions/{execution_id}?wait=10")).json()
    assert (done["status"], done["status_reason"]) == ("error", "no_image")
    assert "the base image could not be bootstrapped" in done["error"]["message"]


async def test_members_cannot_build(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    images: Images,
) -> None:
    app = create_app(settings.evolve(backend="process", auth="on"), images=images)
    api = await aiohttp_client(app)
    tokens = api.server.app[SERVICES].tokens
    _, member = await tokens.create("alpha", Role.MEMBER)
    _, admin = await tokens.create("ops", Role.ADMIN)
    refused = await api.post("/v1/runtimes/python3.13/build", headers={"X-Auth-Token": member})
    await expect_error(refused, 403, "forbidden")
    assert images.builds == []
    accepted = await api.post("/v1/runtimes/python3.13/build", headers={"X-Auth-Token": admin})
    assert accepted.status == 202
    assert images.builds == ["python3.13"]
    images.finish()


async def test_a_nodejs_package_is_checked_as_javascript(api: Client) -> None:
    """A Node.js function's package needs a JavaScript module, its entry names one, and its
    dependencies come inside it: a requirements text is refused, a requirements.txt ignored."""
    package = zipped({"index.js": NODE_ECHO, "requirements.txt": "six\n"})
    created = await api.post(
        "/v1/functions",
        data=form("node", data=package, runtime_id="nodejs20", entry="index.main"),
    )
    assert created.status == 201, await created.text()
    record = await created.json()
    assert (record["entry"], record["requirements"], record["status"]) == (
        "index.main",
        None,
        "available",
    )
    body = aiohttp.FormData({"name": "single", "runtime_id": "nodejs20"})
    body.add_field("package", NODE_ECHO.encode(), filename="hello.js")
    single = await api.post("/v1/functions", data=body)
    assert single.status == 201, await single.text()
    assert (await single.json())["entry"] == "hello.main"

    python_only = form("py", data=make_package(ECHO), runtime_id="nodejs20")
    message = await expect_error(
        await api.post("/v1/functions", data=python_only), 400, "invalid_package"
    )
    assert "no JavaScript (.js, .mjs, .cjs) file" in message
    missing = form("missing", data=package, runtime_id="nodejs20", entry="main.main")
    message = await expect_error(
        await api.post("/v1/functions", data=missing), 400, "invalid_entry"
    )
    assert "expected main.js" in message
    asked = form(
        "asked", data=package, runtime_id="nodejs20", entry="index.main", requirements="six"
    )
    message = await expect_error(
        await api.post("/v1/functions", data=asked), 400, "validation_error"
    )
    assert "node_modules/" in message

    moved = await api.put("/v1/functions/node", data={"runtime_id": "python3"})
    message = await expect_error(moved, 400, "invalid_entry")
    assert "expected index.py" in message
    assert (await (await api.get("/v1/functions/node")).json())["runtime_id"] == record[
        "runtime_id"
    ]
