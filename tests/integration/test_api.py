"""The HTTP API through aiohttp's test client, with functions running for real.

The process backend runs the real runtime server as a local process (fast); the Docker
variant of the same paths is in test_api_docker.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import zipfile
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from spinlet.api.app import create_app
from spinlet.settings import Settings
from tests.conftest import FUNCTIONS
from tests.helpers import make_package

Client = TestClient[Any, Any]


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> AsyncIterator[Client]:
    settings = settings.evolve(backend="process", max_input_size=4096, max_request_size=256 * 1024)
    yield await aiohttp_client(create_app(settings))


def form(
    name: str, path: Path | None = None, data: bytes | None = None, **fields: Any
) -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("name", name)
    for key, value in fields.items():
        body.add_field(key, value if isinstance(value, str) else json.dumps(value))
    if path is not None:
        body.add_field("package", path.read_bytes(), filename=path.name)
    elif data is not None:
        body.add_field("package", data, filename="package.zip")
    return body


async def create(api: Client, name: str, source: str = "hello", **fields: Any) -> dict[str, Any]:
    response = await api.post(
        "/v1/functions", data=form(name, FUNCTIONS / f"{source}.py", **fields)
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def run(api: Client, function: str, input: Any = None) -> dict[str, Any]:
    response = await api.post("/v1/executions", json={"function_id": function, "input": input})
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def expect_error(response: aiohttp.ClientResponse, status: int, code: str) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"]["code"] == code
    assert body["faultstring"] == body["error"]["message"]
    message: str = body["error"]["message"]
    return message


async def test_builtin_runtime_is_registered(api: Client) -> None:
    runtimes = (await (await api.get("/v1/runtimes")).json())["runtimes"]
    assert [rt["name"] for rt in runtimes] == ["python3", "python3.13", "nodejs20"]
    by_name = await (await api.get("/v1/runtimes/python3")).json()
    assert by_name["id"] == runtimes[0]["id"] and by_name["status"] == "available"


async def test_hello_runs_and_its_output_is_recorded(api: Client) -> None:
    function = await create(api, "hello")
    assert function["entry"] == "hello.main" and function["status"] == "available"
    execution = await run(api, "hello", {"name": "Ada"})
    assert execution["status"] == "success", execution["error"]
    assert execution["result"] == {"greeting": "Hello, Ada!"}
    assert execution["function_id"] == function["id"]
    assert execution["function_version"] == 0
    assert execution["start_kind"] in ("cold", "stem", "warm")
    assert execution["duration_ms"] > 0 and execution["finished_at"]
    log = await api.get(f"/v1/executions/{execution['id']}/log")
    assert log.content_type == "text/plain"
    assert await log.text() == "Hello, Ada!\n"
    stored = await (await api.get(f"/v1/executions/{execution['id']}")).json()
    assert stored["result"] == execution["result"] and stored["status"] == "success"


async def test_a_string_input_holding_json_is_parsed(api: Client) -> None:
    await create(api, "echo", "echo")
    execution = await run(api, "echo", '{"a": [1, 2]}')
    assert execution["result"] == {"a": [1, 2]} and execution["input"] == {"a": [1, 2]}
    assert (await run(api, "echo", "plain words"))["result"] == "plain words"


async def test_an_exception_becomes_a_failed_execution(api: Client) -> None:
    await create(api, "fail", "fail")
    execution = await run(api, "fail", {"message": "boom"})
    assert execution["status"] == "failed" and execution["status_reason"] == "exception"
    assert execution["error"]["type"] == "ValueError"
    assert execution["error"]["message"] == "boom"
    assert "Traceback" in execution["error"]["traceback"]
    log = await (await api.get(f"/v1/executions/{execution['id']}/log")).text()
    assert log == "about to fail\n" + execution["error"]["traceback"]  # its last lines


async def test_function_from_a_zip_with_code_and_md5sum(api: Client) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", "from lib import twice\ndef main(e):\n    return twice(e)\n")
        archive.writestr("lib.py", "def twice(x):\n    return x * 2\n")
    data = buffer.getvalue()
    code = {"source": "package", "md5sum": hashlib.md5(data).hexdigest()}
    response = await api.post("/v1/functions", data=form("twice", data=data, code=code))
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["entry"] == "main.main" and body["code"] == code
    assert (await run(api, "twice", 21))["result"] == 42
    download = await api.get(f"/v1/functions/{body['id']}?download=true")
    assert download.content_type == "application/zip" and await download.read() == data


async def test_md5_mismatch_and_bad_packages_are_clear_400s(api: Client) -> None:
    code = {"source": "package", "md5sum": "0" * 32}
    response = await api.post("/v1/functions", data=form("x", FUNCTIONS / "hello.py", code=code))
    await expect_error(response, 400, "md5_mismatch")
    response = await api.post("/v1/functions", data=form("x", data=b"\x00\x01garbage"))
    await expect_error(response, 400, "invalid_package")
    response = await api.post("/v1/functions", data=form("x"))
    assert "package is required" in await expect_error(response, 400, "validation_error")
    response = await api.post(
        "/v1/functions", data=form("x", FUNCTIONS / "hello.py", entry="nothere.main")
    )
    assert "nothere" in await expect_error(response, 400, "invalid_entry")
    response = await api.post(
        "/v1/functions", data=form("x", FUNCTIONS / "hello.py", runtime_id="nope")
    )
    await expect_error(response, 404, "not_found")
    response = await api.post(
        "/v1/functions", data=form("x", FUNCTIONS / "hello.py", timeout="soon")
    )
    assert "timeout" in await expect_error(response, 400, "validation_error")
    assert (await (await api.get("/v1/functions")).json())["functions"] == []


async def test_a_missing_handler_function_is_refused_or_a_clear_failed_execution(
    api: Client,
) -> None:
    response = await api.post(
        "/v1/functions", data=form("typo", FUNCTIONS / "hello.py", entry="hello.mian")
    )
    assert "'mian'" in await expect_error(response, 400, "invalid_entry")
    # What only running the module would tell (an `import *` might bind it) is accepted, and
    # the first call says what is missing.
    package = make_package("from json import *\n\ndef main(event):\n    return event\n")
    response = await api.post("/v1/functions", data=form("typo", data=package, entry="main.mian"))
    assert response.status == 201, await response.text()
    execution = await run(api, "typo")
    assert execution["status"] == "failed"
    assert "mian" in execution["error"]["message"]


async def test_duplicate_names_conflict(api: Client) -> None:
    await create(api, "hello")
    response = await api.post("/v1/functions", data=form("hello", FUNCTIONS / "hello.py"))
    await expect_error(response, 409, "already_exists")


async def test_update_with_nulls_keeps_fields_and_new_code_runs(api: Client) -> None:
    function = await create(api, "greeter", timeout="30")
    response = await api.put(
        f"/v1/functions/{function['id']}",
        json={"name": None, "description": "greets", "timeout": None, "code": None},
    )
    assert response.status == 200, await response.text()
    updated = await response.json()
    assert updated["timeout"] == 30 and updated["description"] == "greets"
    assert updated["name"] == "greeter"
    new_code = b"def main(event):\n    print('v2')\n    return 'v2'\n"
    body = aiohttp.FormData()
    body.add_field("package", new_code, filename="hello.py")
    response = await api.put("/v1/functions/greeter", data=body)
    assert response.status == 200, await response.text()
    assert (await run(api, "greeter"))["result"] == "v2"


async def test_delete_function_keeps_its_executions(api: Client) -> None:
    await create(api, "hello")
    execution = await run(api, "hello")
    assert (await api.delete("/v1/functions/hello")).status == 204
    await expect_error(await api.get("/v1/functions/hello"), 404, "not_found")
    kept = await (await api.get(f"/v1/executions/{execution['id']}")).json()
    assert kept["function_name"] == "hello" and kept["status"] == "success"


async def test_runtime_in_use_cannot_be_deleted(api: Client) -> None:
    await create(api, "hello")
    await expect_error(await api.delete("/v1/runtimes/python3"), 403, "forbidden")


async def test_execution_bad_input(api: Client) -> None:
    response = await api.post(
        "/v1/executions", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    await expect_error(response, 400, "malformed_json")
    await expect_error(await api.post("/v1/executions", json={}), 400, "validation_error")
    await expect_error(
        await api.post("/v1/executions", json={"function_id": "ghost"}), 404, "not_found"
    )
    await expect_error(
        await api.post("/v1/executions", json={"function_id": "x", "function_version": -1}),
        400,
        "validation_error",
    )
    await create(api, "echo", "echo")
    response = await api.post("/v1/executions", json={"function_id": "echo", "input": "x" * 5000})
    assert "limit is 4096" in await expect_error(response, 413, "too_large")
    response = await api.post(
        "/v1/executions", data=b"[" * (300 * 1024), headers={"Content-Type": "application/json"}
    )
    assert "limit" in await expect_error(response, 413, "too_large")
    executions = (await (await api.get("/v1/executions")).json())["executions"]
    assert executions == []


async def test_unknown_routes_and_methods_are_json(api: Client) -> None:
    await expect_error(await api.get("/v1/nothing"), 404, "not_found")
    await expect_error(await api.patch("/v1/functions"), 405, "method_not_allowed")
    await expect_error(await api.get("/v1/executions/nope"), 404, "not_found")


async def test_list_executions_filters_and_next_link(api: Client) -> None:
    await create(api, "echo", "echo")
    await create(api, "fail", "fail")
    ok = [await run(api, "echo", i) for i in range(3)]
    bad = await run(api, "fail")
    fail_id = bad["function_id"]
    listed = await (await api.get(f"/v1/executions?function_id={fail_id}")).json()
    assert [e["id"] for e in listed["executions"]] == [bad["id"]]
    assert "result" not in listed["executions"][0]
    successes = await (await api.get("/v1/executions?status=success&limit=2")).json()
    assert [e["id"] for e in successes["executions"]] == [ok[2]["id"], ok[1]["id"]]
    assert successes["next"].startswith("http")
    rest = await (await api.get(URL(successes["next"]).path_qs)).json()
    assert [e["id"] for e in rest["executions"]] == [ok[0]["id"]]
    assert rest["next"] is None
    with_output = await (await api.get("/v1/executions?include_output=true&limit=1")).json()
    assert with_output["executions"][0]["result"] is None  # the failed one is newest
    await expect_error(await api.get("/v1/executions?status=bogus"), 400, "validation_error")


async def test_delete_execution(api: Client) -> None:
    await create(api, "echo", "echo")
    execution = await run(api, "echo", 1)
    assert (await api.delete(f"/v1/executions/{execution['id']}")).status == 204
    await expect_error(await api.get(f"/v1/executions/{execution['id']}"), 404, "not_found")


async def test_invoke_returns_the_result_as_the_body(api: Client) -> None:
    await create(api, "echo", "echo")
    response = await api.post("/v1/functions/echo/invoke", json={"x": 1})
    assert response.status == 200
    assert await response.json() == {"x": 1}
    execution_id = response.headers["X-Spinlet-Execution-Id"]
    assert response.headers["X-Spinlet-Execution-Status"] == "success"
    record = await (await api.get(f"/v1/executions/{execution_id}")).json()
    assert record["source"] == "invoke"
    await create(api, "fail", "fail")
    response = await api.post("/v1/functions/fail/invoke", json={"message": "nope"})
    assert response.status == 502
    body = await response.json()
    assert body["error"]["message"] == body["faultstring"] == "nope"
    assert body["error"]["code"] == "execution_failed"
    assert (body["status"], body["status_reason"]) == ("failed", "exception")
    assert body["error"]["type"] == "ValueError" and "nope" in body["error"]["traceback"]
    assert set(body["error"]) == {"code", "message", "type", "traceback"}
    assert response.headers["X-Spinlet-Execution-Status"] == "failed"


NUL_FUNCTION = """
import os


def main(event):
    print("before\\x00after")
    os.write(2, b"raw\\x00bytes\\xff\\n")
    return {"echo": event, "made": "x\\x00y"}
"""


async def test_nul_characters_in_input_result_and_logs_are_kept(api: Client) -> None:
    # PostgreSQL's text refuses NUL: what a function prints or returns must still be recorded.
    package = make_package(NUL_FUNCTION, module="nul")
    created = await api.post("/v1/functions", data=form("nul", data=package, entry="nul.main"))
    assert created.status == 201, await created.text()
    execution = await run(api, "nul", {"text": "in\x00put"})
    assert execution["status"] == "success", execution["error"]
    assert execution["result"] == {"echo": {"text": "in\x00put"}, "made": "x\x00y"}
    stored = await (await api.get(f"/v1/executions/{execution['id']}")).json()
    assert stored["result"] == execution["result"] and stored["input"] == {"text": "in\x00put"}
    log = await (await api.get(f"/v1/executions/{execution['id']}/log")).text()
    # NUL is kept as U+FFFD, as the runtime keeps undecodable bytes.
    assert sorted(log.splitlines()) == ["before\ufffdafter", "raw\ufffdbytes\ufffd"]


async def test_a_cancel_while_its_code_is_imported_keeps_its_container(
    api: Client, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    # Importing its code waits until the test opens the FIFO: the cancel comes during /init.
    source = f"open({str(fifo)!r}).read()\n\n\ndef main(event):\n    return 1\n"
    response = await api.post("/v1/functions", data=form("slow-import", data=make_package(source)))
    assert response.status == 201, await response.text()
    response = await api.post("/v1/executions", json={"function_id": "slow-import", "sync": False})
    execution_id = (await response.json())["id"]
    fd = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)  # once its import waits on it
    try:
        response = await api.post(f"/v1/executions/{execution_id}/cancel", json={"kill": True})
        cancelled = await response.json()
    finally:
        os.close(fd)
    assert cancelled["status"] == "cancelled", cancelled
    # It had a container, being initialised: the record names it, and how it was started.
    assert cancelled["container_id"] and cancelled["start_kind"] in ("cold", "stem")
