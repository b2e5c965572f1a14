"""Python 3.13 beside 3.11, in real containers: its functions run on 3.13, and their
dependency layers are resolved for 3.13 (a build of their own, apart from 3.11's).

pip resolves against the session's local wheelhouse (`offline_pip`); `six` is a pure-Python
wheel, so the same wheel serves both Pythons.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.keys import SERVICES
from spinlet.runtime.catalog import PYTHON313
from spinlet.runtime.images import ensure_runtime_image
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
