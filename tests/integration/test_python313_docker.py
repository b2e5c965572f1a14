"""Python 3.13 beside 3.11, in real containers: its functions run on 3.13, and their
dependency layers are resolved for 3.13 (a build of their own, apart from 3.11's).

pip resolves against the session's local wheelhouse (`offline_pip`); `six` is a pure-Python
wheel, so the same wheel serves both Pythons.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import docker.errors
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.keys import SERVICES
from spinlet.domain import RuntimeStatus
from spinlet.runtime.catalog import PYTHON313
from spinlet.runtime.images import SOURCE_LABEL, ensure_runtime_image, image_present, source_hash
from spinlet.services.runtime_builds import DockerImages, RuntimeBuilds
from tests.integration.test_dependencies import built, create, invoke, package

pytestmark = pytest.mark.docker
Client = TestClient[Any, Any]

VERSION = """
import sys

def main(event, context):
    import six
    return {"version": list(sys.version_info[:2]), "six": six.__file__}
"""


@pytest.fixture(scope="module")
def python313_image(docker_client: Any) -> str:
    """The `python3.13` runtime's image, built first when it is missing."""
    return ensure_runtime_image(docker_client, runtime=PYTHON313, progress=lambda line: None)


@pytest.fixture
def api(docker_api: Client, python313_image: str) -> Client:
    return docker_api


async def test_the_python313_runtime_is_available_once_built(api: Client) -> None:
    runtime = await (await api.get("/v1/runtimes/python3.13")).json()
    assert (runtime["status"], runtime["image"]) == ("available", PYTHON313.image)


@pytest.mark.usefixtures("offline_pip")
async def test_same_requirements_on_311_and_313_get_builds_of_their_own(api: Client) -> None:
    records = {}
    for name, runtime in (("on311", "python3"), ("on313", "python3.13")):
        status, record = await create(api, name, package(VERSION, "six\n"), runtime_id=runtime)
        assert status == 201, record
        records[name] = await built(api, name)
        assert records[name]["status"] == "available", records[name]
    store = api.server.app[SERVICES].store
    on311, on313 = [await store.functions.get("default", name) for name in ("on311", "on313")]
    assert on311.build_key != on313.build_key
    assert on311.layer_id != on313.layer_id  # resolved for each one's Python
    layers = [await store.layers.find_layer(f.layer_id or "") for f in (on311, on313)]
    assert [layer.target.split("-")[0] for layer in layers if layer] == ["cp311", "cp313"]

    for name, version in (("on311", [3, 11]), ("on313", [3, 13])):
        execution = await invoke(api, name)
        assert execution["status"] == "success", execution
        assert execution["result"]["version"] == version
        assert execution["result"]["six"].startswith("/var/spinlet/layer/")


async def test_a_first_use_build_makes_the_image_for_real(docker_client: Any) -> None:
    """What a node does on first use, with the real engine (under a throwaway tag)."""
    tag = f"spinlet/runtime-python3.13:test-{uuid.uuid4().hex[:8]}"
    entry = PYTHON313.evolve(image=tag)

    async def image_id(ref: str) -> str | None:
        return await asyncio.to_thread(
            lambda: docker_client.images.get(ref).id if image_present(docker_client, ref) else None
        )

    builds = RuntimeBuilds(DockerImages(image_id), (entry,))
    try:
        assert (await builds.state(entry)).status is RuntimeStatus.NOT_BUILT
        assert await builds.ensure(tag) == entry  # started
        assert (await builds.state(entry)).status is RuntimeStatus.BUILDING
        await builds.wait(tag)
        assert (await builds.state(entry)).status is RuntimeStatus.AVAILABLE
        labels = (await asyncio.to_thread(docker_client.images.get, tag)).labels
        assert labels["spinlet.runtime"] == "python3.13"
        assert labels[SOURCE_LABEL] == await asyncio.to_thread(source_hash, "python")
        await builds.check_ready(tag)  # no longer refused
    finally:
        await builds.close()
        with contextlib.suppress(docker.errors.ImageNotFound):
            await asyncio.to_thread(docker_client.images.remove, tag)
