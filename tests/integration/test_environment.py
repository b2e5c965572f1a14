"""Per-function environment variables: seen by the code, never shown by the API, frozen in
versions. On both backends."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import make_package
from tests.integration.conftest import ApiFactory
from tests.integration.test_api import expect_error
from tests.integration.test_versions_api import execute, publish

Client = TestClient[Any, Any]

READS_ENV = """
import os

def main(event):
    return {name: os.environ.get(name) for name in event}
"""
SECRET = "s3cr3t-value-7f1c"


@pytest.fixture
async def api(api_factory: ApiFactory) -> Client:
    return await api_factory(stem_cells=0)


async def upload(api: Client, environment: Any) -> aiohttp.ClientResponse:
    body = aiohttp.FormData()
    body.add_field("name", "env")
    body.add_field("environment", json.dumps(environment))
    body.add_field("package", make_package(READS_ENV), filename="package.zip")
    return await api.post("/v1/functions", data=body)


async def test_the_code_sees_its_variables_and_the_api_shows_only_names(
    api: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await upload(api, {"API_KEY": SECRET, "MODE": "test"})
    assert response.status == 201, await response.text()
    created = await response.text()
    assert SECRET not in created
    assert json.loads(created)["environment_keys"] == ["API_KEY", "MODE"]
    record = await execute(api, function_id="env", input=["API_KEY", "MODE", "HOME_X"])
    assert record["result"] == {"API_KEY": SECRET, "MODE": "test", "HOME_X": None}
    # (The execution's result holds it: this function returns it.)
    for path in ("/v1/functions/env", "/v1/functions", f"/v1/executions/{record['id']}/log"):
        assert SECRET not in await (await api.get(path)).text()
    assert caplog.records and SECRET not in caplog.text  # nor does the node log it


async def test_an_update_replaces_them_and_versions_keep_theirs(api: Client) -> None:
    assert (await upload(api, {"MODE": "one"})).status == 201
    v1 = await publish(api, "env")
    assert v1["environment_keys"] == ["MODE"]
    response = await api.put("/v1/functions/env", json={"environment": {"MODE": "two"}})
    assert response.status == 200, await response.text()
    # A changed environment is a change: publishing makes version 2.
    assert (await publish(api, "env"))["version_number"] == 2
    assert await publish(api, "env", status=200)  # nothing changed since
    for version, mode in ((0, "two"), (1, "one"), (2, "two")):
        record = await execute(api, function_id="env", function_version=version, input=["MODE"])
        assert record["result"] == {"MODE": mode}, version
    # Null (what the Qinling client sends) leaves them as they are.
    response = await api.put("/v1/functions/env", json={"environment": None, "timeout": 30})
    assert response.status == 200
    record = await execute(api, function_id="env", input=["MODE"])
    assert record["result"] == {"MODE": "two"}


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"1BAD": "x"}, "not valid"),
        ({"A-B": "x"}, "not valid"),
        ({"SPINLET_SOCKET": "/tmp/x"}, "reserved"),
        ({"BIG": "x" * 40_000}, "the limit is"),
        ({"N": 1}, "environment"),
        (["A"], "environment"),
    ],
)
async def test_bad_environments_are_refused(api: Client, environment: Any, problem: str) -> None:
    message = await expect_error(await upload(api, environment), 400, "validation_error")
    assert problem in message
    assert (await api.get("/v1/functions/env")).status == 404


async def test_an_update_adds_and_removes_some_keeping_the_others(api: Client) -> None:
    assert (await upload(api, {"KEEP": "kept", "DROP": "x", "MODE": "one"})).status == 201
    body = {"environment_add": {"MODE": "two", "NEW": "new"}, "environment_remove": ["DROP"]}
    response = await api.put("/v1/functions/env", json=body)
    assert response.status == 200, await response.text()
    assert (await response.json())["environment_keys"] == ["KEEP", "MODE", "NEW"]
    # As form fields (JSON strings), the way the CLI sends them; an absent name is no error.
    form = {"environment_add": '{"MORE": "m"}', "environment_remove": '["NEW", "ABSENT"]'}
    assert (await api.put("/v1/functions/env", data=form)).status == 200
    record = await execute(api, function_id="env", input=["KEEP", "MODE", "NEW", "MORE", "DROP"])
    assert record["result"] == {
        "KEEP": "kept",
        "MODE": "two",
        "NEW": None,
        "MORE": "m",
        "DROP": None,
    }
    # What is added is checked as any variable is.
    response = await api.put("/v1/functions/env", json={"environment_add": {"SPINLET_X": "1"}})
    assert "reserved" in await expect_error(response, 400, "validation_error")
