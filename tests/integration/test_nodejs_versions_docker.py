"""A Node.js function released with versions and an alias, run sync and async, in real
containers of the `nodejs20` runtime."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.runtime.catalog import NODEJS20
from spinlet.runtime.images import ensure_runtime_image
from tests.helpers import zipped
from tests.integration.test_api import form
from tests.integration.test_async_api import wait
from tests.integration.test_versions_api import execute, log_of, make_alias, publish

pytestmark = pytest.mark.docker
Client = TestClient[Any, Any]

#: A handler whose every answer says which code it is and which version of it ran.
TAGGED = """module.exports.main = async (event, context) => {
  console.log(`%s ran as version ${context.functionVersion}`);
  return { code: '%s', version: context.functionVersion, input: event };
};
"""


def tagged(tag: str) -> bytes:
    return zipped({"main.js": TAGGED % (tag, tag)})


@pytest.fixture(scope="module")
def nodejs_image(docker_client: Any) -> str:
    """The `nodejs20` runtime's image, built first when it is missing or stale."""
    return ensure_runtime_image(docker_client, runtime=NODEJS20, progress=lambda line: None)


@pytest.fixture
def api(docker_api: Client, nodejs_image: str) -> Client:
    return docker_api


async def test_a_nodejs_release_runs_by_alias_sync_and_async(api: Client) -> None:
    fields = {"runtime_id": "nodejs20", "entry": "main.main"}
    response = await api.post("/v1/functions", data=form("shop", data=tagged("A"), **fields))
    assert response.status == 201, await response.text()
    assert (await publish(api, "shop"))["version_number"] == 1
    body = aiohttp.FormData()
    body.add_field("package", tagged("B"), filename="package.zip")
    response = await api.put("/v1/functions/shop", data=body)
    assert response.status == 200, await response.text()
    await make_alias(api, name="live", function_id="shop", function_version=1)

    sync = await execute(api, function_alias="live", input={"n": 1})
    assert sync["result"] == {"code": "A", "version": 1, "input": {"n": 1}}
    assert sync["function_version"] == 1
    assert await log_of(api, sync) == "A ran as version 1\n"

    body = {"function_alias": "live", "input": {"n": 2}, "sync": False}
    response = await api.post("/v1/executions", json=body)
    assert response.status == 202, await response.text()
    done = await wait(api, (await response.json())["id"])
    assert done["status"] == "success", done
    assert done["result"] == {"code": "A", "version": 1, "input": {"n": 2}}
    assert done["function_version"] == 1

    # Version 0 is the code as it is now, beside the released one.
    latest = await execute(api, function_id="shop", function_version=0)
    assert latest["result"]["code"] == "B" and latest["function_version"] == 0
