"""The API's inputs: function bodies in every format, the runtimes API, and size limits.

Functions run as local processes (fast); only what needs a real image registry (a runtime
whose image is missing) runs against Docker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.settings import Settings
from tests.conftest import FUNCTIONS
from tests.helpers import zipped
from tests.integration.test_api import create, expect_error, form, run

Client = TestClient[Any, Any]
MakeApi = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> MakeApi:
    """The API on the process backend, with the settings changed as a test needs."""

    async def make(**changes: Any) -> Client:
        return await aiohttp_client(create_app(settings.evolve(backend="process", **changes)))

    return make


@pytest.fixture
async def api(make_api: MakeApi) -> Client:
    return await make_api(stem_cells=0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def function_names(api: Client) -> list[str]:
    body = await (await api.get("/v1/functions")).json()
    return [fn["name"] for fn in body["functions"]]


# --- function bodies ---------------------------------------------------------------------


async def test_create_from_json_with_a_base64_python_file(api: Client) -> None:
    source = (FUNCTIONS / "echo.py").read_bytes()
    response = await api.post(
        "/v1/functions",
        json={
            "name": "echo-json",
            "package": b64(source),
            "filename": "echo.py",
            "timeout": 12,
            "description": "from JSON",
        },
    )
    assert response.status == 201, await response.text()
    function = await response.json()
    assert function["entry"] == "echo.main"
    assert function["timeout"] == 12 and function["description"] == "from JSON"
    execution = await run(api, "echo-json", {"via": "json"})
    assert execution["status"] == "success", execution["error"]
    assert execution["result"] == {"via": "json"}
    assert execution["function_id"] == function["id"]


async def test_create_from_json_with_a_base64_zip_and_its_md5sum(api: Client) -> None:
    data = zipped(
        {
            "main.py": "from lib import half\ndef main(e):\n    return half(e)\n",
            "lib.py": "def half(x):\n    return x / 2\n",
        }
    )
    code = {"source": "package", "md5sum": hashlib.md5(data).hexdigest()}
    response = await api.post(
        "/v1/functions", json={"name": "half", "package": b64(data), "code": code}
    )
    assert response.status == 201, await response.text()
    function = await response.json()
    assert function["entry"] == "main.main" and function["code"] == code
    assert (await run(api, "half", 9))["result"] == 4.5
    download = await api.get(f"/v1/functions/{function['id']}?download=true")
    assert await download.read() == data


async def test_a_json_package_that_is_not_base64_is_a_400(api: Client) -> None:
    response = await api.post("/v1/functions", json={"name": "x", "package": "not base64!"})
    assert "base64" in await expect_error(response, 400, "validation_error")
    response = await api.post("/v1/functions", json={"name": "x", "package": 42})
    assert "base64" in await expect_error(response, 400, "validation_error")
    response = await api.post("/v1/functions", json={"name": "x"})
    assert "package is required" in await expect_error(response, 400, "validation_error")
    response = await api.post("/v1/functions", json=["name", "x"])
    await expect_error(response, 400, "validation_error")
    assert await function_names(api) == []


async def test_create_from_a_form_with_the_code_as_a_text_field(api: Client) -> None:
    source = (FUNCTIONS / "hello.py").read_text()
    # A plain dict is sent as application/x-www-form-urlencoded.
    response = await api.post(
        "/v1/functions", data={"name": "hello-form", "package": source, "timeout": "20"}
    )
    assert response.status == 201, await response.text()
    function = await response.json()
    assert function["entry"] == "main.main"  # a file without a name is main.py
    assert function["timeout"] == 20
    execution = await run(api, "hello-form", {"name": "Form"})
    assert execution["status"] == "success", execution["error"]
    assert execution["result"] == {"greeting": "Hello, Form!"}
    log = await (await api.get(f"/v1/executions/{execution['id']}/log")).text()
    assert log == "Hello, Form!\n"


async def test_update_from_json_and_from_a_form_runs_the_new_code(api: Client) -> None:
    await create(api, "changing", "echo")
    response = await api.put(
        "/v1/functions/changing",
        json={
            "package": b64(b"def main(event):\n    return 'json v2'\n"),
            "filename": "echo.py",  # the entry stays echo.main
            "timeout": None,
        },
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["timeout"] == 60  # null: unchanged (the default)
    assert (await run(api, "changing", 1))["result"] == "json v2"
    # A text field has no file name (it is main.py): the entry must say so.
    response = await api.put(
        "/v1/functions/changing",
        data={
            "package": "def main(event):\n    return 'form v3'\n",
            "entry": "main.main",
            "description": "v3",
        },
    )
    assert response.status == 200, await response.text()
    updated = await response.json()
    assert updated["description"] == "v3" and updated["entry"] == "main.main"
    assert (await run(api, "changing", 1))["result"] == "form v3"


# --- runtimes ----------------------------------------------------------------------------


async def test_runtime_get_update_and_delete(api: Client) -> None:
    response = await api.post(
        "/v1/runtimes",
        json={"name": "custom", "image": "example/custom:1", "description": "first"},
    )
    assert response.status == 201, await response.text()
    runtime = await response.json()
    assert runtime["name"] == "custom" and runtime["image"] == "example/custom:1"
    assert runtime["status"] == "available" and runtime["is_public"] is False
    by_id = await api.get(f"/v1/runtimes/{runtime['id']}")
    assert by_id.status == 200 and await by_id.json() == runtime
    by_name = await api.get("/v1/runtimes/custom")
    assert by_name.status == 200 and await by_name.json() == runtime

    response = await api.put(
        f"/v1/runtimes/{runtime['id']}",
        json={"name": None, "image": None, "description": "second"},
    )
    assert response.status == 200, await response.text()
    updated = await response.json()
    assert updated["description"] == "second"
    assert (updated["id"], updated["name"], updated["image"]) == (
        runtime["id"],
        "custom",
        "example/custom:1",
    )
    assert updated["updated_at"] is not None
    stored = await (await api.get("/v1/runtimes/custom")).json()
    assert stored["description"] == "second" and stored["image"] == "example/custom:1"
    listed = (await (await api.get("/v1/runtimes")).json())["runtimes"]
    assert sorted(rt["name"] for rt in listed) == ["custom", "nodejs20", "python3", "python3.13"]

    deleted = await api.delete(f"/v1/runtimes/{runtime['id']}")
    assert deleted.status == 204
    await expect_error(await api.get(f"/v1/runtimes/{runtime['id']}"), 404, "not_found")
    await expect_error(await api.get("/v1/runtimes/custom"), 404, "not_found")
    await expect_error(await api.delete(f"/v1/runtimes/{runtime['id']}"), 404, "not_found")
    listed = (await (await api.get("/v1/runtimes")).json())["runtimes"]
    assert [rt["name"] for rt in listed] == ["python3", "python3.13", "nodejs20"]


async def test_runtime_rename_clash_and_bad_bodies(api: Client) -> None:
    response = await api.post("/v1/runtimes", json={"name": "other", "image": "example/o:1"})
    assert response.status == 201
    response = await api.put("/v1/runtimes/other", json={"name": "python3"})
    await expect_error(response, 409, "already_exists")
    assert (await (await api.get("/v1/runtimes/other")).json())["name"] == "other"
    response = await api.put("/v1/runtimes/other", json={"name": "renamed"})
    assert response.status == 200, await response.text()
    assert (await (await api.get("/v1/runtimes/renamed")).json())["image"] == "example/o:1"
    await expect_error(await api.get("/v1/runtimes/other"), 404, "not_found")
    response = await api.put("/v1/runtimes/renamed", json=["not", "an", "object"])
    await expect_error(response, 400, "validation_error")
    response = await api.post("/v1/runtimes", json={"name": "renamed", "image": "example/o:2"})
    await expect_error(response, 409, "already_exists")
    response = await api.post("/v1/runtimes", json={"name": "no-image"})
    assert "image" in await expect_error(response, 400, "validation_error")
    response = await api.post("/v1/runtimes", json={"name": "bad name!", "image": "x:1"})
    assert "bad name!" in await expect_error(response, 400, "validation_error")
    await expect_error(await api.put("/v1/runtimes/ghost", json={}), 404, "not_found")


async def test_a_runtime_in_use_is_kept_until_its_function_goes(api: Client) -> None:
    response = await api.post("/v1/runtimes", json={"name": "mine", "image": "example/m:1"})
    runtime = await response.json()
    function = await create(api, "on-mine", "echo", runtime_id=runtime["name"])
    assert function["runtime_id"] == runtime["id"]
    await expect_error(await api.delete("/v1/runtimes/mine"), 403, "forbidden")
    assert (await api.get("/v1/runtimes/mine")).status == 200
    assert (await api.delete("/v1/functions/on-mine")).status == 204
    assert (await api.delete("/v1/runtimes/mine")).status == 204
    await expect_error(await api.get("/v1/runtimes/mine"), 404, "not_found")


async def test_runtime_pool_counts_the_containers_of_its_image(api: Client) -> None:
    runtime = await (await api.get("/v1/runtimes/python3")).json()
    response = await api.get(f"/v1/runtimes/{runtime['id']}/pool")
    assert response.status == 200, await response.text()
    assert await response.json() == {
        "name": runtime["id"],
        "capacity": {"total": 0, "available": 0},
    }
    await create(api, "hello")
    assert (await run(api, "hello"))["status"] == "success"
    pool = await (await api.get("/v1/runtimes/python3/pool")).json()
    assert pool == {"name": runtime["id"], "capacity": {"total": 1, "available": 1}}
    await expect_error(await api.get("/v1/runtimes/ghost/pool"), 404, "not_found")


async def test_a_runtime_no_function_uses_has_an_empty_pool(api: Client) -> None:
    response = await api.post("/v1/runtimes", json={"name": "unused", "image": "example/u:1"})
    assert response.status == 201, await response.text()
    await create(api, "hello")
    assert (await run(api, "hello"))["status"] == "success"
    response = await api.post("/v1/functions/hello/versions", json={})
    assert response.status == 201, await response.text()
    response = await api.post(
        "/v1/executions", json={"function_id": "hello", "function_version": 1}
    )
    assert (await response.json())["status"] == "success"
    python3 = await (await api.get("/v1/runtimes/python3/pool")).json()
    assert python3["capacity"] == {"total": 2, "available": 2}  # version 0 and version 1
    unused = await (await api.get("/v1/runtimes/unused/pool")).json()
    assert unused["capacity"] == {"total": 0, "available": 0}


@pytest.mark.docker
async def test_a_runtime_image_that_does_not_exist_is_a_400(
    docker_api: Client, runtime_image_tag: str
) -> None:
    response = await docker_api.post(
        "/v1/runtimes", json={"name": "ghost", "image": "spinlet/no-such-image:404"}
    )
    assert "no-such-image" in await expect_error(response, 400, "image_not_found")
    await expect_error(await docker_api.get("/v1/runtimes/ghost"), 404, "not_found")
    response = await docker_api.post(
        "/v1/runtimes", json={"name": "real", "image": runtime_image_tag}
    )
    assert response.status == 201, await response.text()
    response = await docker_api.put(
        "/v1/runtimes/real", json={"image": "spinlet/no-such-image:404", "description": "x"}
    )
    assert "no-such-image" in await expect_error(response, 400, "image_not_found")
    kept = await (await docker_api.get("/v1/runtimes/real")).json()
    assert kept["image"] == runtime_image_tag and kept["description"] is None


# --- size limits -------------------------------------------------------------------------


def big_source(size: int) -> bytes:
    """A valid Python file of at least `size` bytes."""
    return b"def main(event):\n    return 'big'\n" + b"#" * size + b"\n"


async def test_an_oversized_package_is_a_413_naming_the_limit(make_api: MakeApi) -> None:
    api = await make_api(max_package_size=2000)
    data = big_source(2000)
    response = await api.post("/v1/functions", data=form("big", data=data))
    message = await expect_error(response, 413, "too_large")
    assert "2000" in message and str(len(data)) in message
    response = await api.post(
        "/v1/functions", json={"name": "big", "package": b64(data), "filename": "big.py"}
    )
    assert "2000" in await expect_error(response, 413, "too_large")
    response = await api.post("/v1/functions", data={"name": "big", "package": data.decode()})
    assert "2000" in await expect_error(response, 413, "too_large")
    assert await function_names(api) == []
    # An oversized update is refused and keeps the old code.
    await create(api, "small", "echo")
    response = await api.put("/v1/functions/small", data=form("small", data=data))
    assert "2000" in await expect_error(response, 413, "too_large")
    assert (await run(api, "small", "still echo"))["result"] == "still echo"
    # A package of exactly the limit is accepted.
    fits = big_source(2000 - len(big_source(0)))
    assert len(fits) == 2000
    response = await api.post(
        "/v1/functions", json={"name": "fits", "package": b64(fits), "filename": "fits.py"}
    )
    assert response.status == 201, await response.text()
    assert (await run(api, "fits"))["result"] == "big"


async def test_an_oversized_zip_package_is_a_413(make_api: MakeApi) -> None:
    api = await make_api(max_package_size=2000)
    # A stored zip (no compression) of a big file stays big.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("main.py", big_source(4000))
    data = buffer.getvalue()
    assert len(data) > 2000
    response = await api.post("/v1/functions", data=form("bigzip", data=data))
    assert "2000" in await expect_error(response, 413, "too_large")


async def test_a_request_over_the_body_limit_is_a_413_naming_it(make_api: MakeApi) -> None:
    api = await make_api(max_request_size=64 * 1024)
    response = await api.post("/v1/functions", data=form("huge", data=big_source(100 * 1024)))
    assert str(64 * 1024) in await expect_error(response, 413, "too_large")
    assert await function_names(api) == []


async def test_a_long_log_keeps_its_head_and_its_tail_and_ends_with_the_traceback(
    make_api: MakeApi,
) -> None:
    api = await make_api(log_limit=1000)
    source = (
        "def main(event):\n"
        "    for i in range(1000):\n"
        "        print(f'step {i:03}')\n"  # 9 bytes a line
        "    raise RuntimeError('gave up')\n"
    )
    package = form("chatty", data=zipped({"chatty.py": source}), entry="chatty.main")
    response = await api.post("/v1/functions", data=package)
    assert response.status == 201, await response.text()
    execution = await run(api, "chatty")
    traceback = execution["error"]["traceback"]
    log = await (await api.get(f"/v1/executions/{execution['id']}/log")).text()
    cut = re.fullmatch(
        r"(.*)\n\[spinlet: log truncated, (\d+) bytes dropped\]\n(.*)", log, flags=re.DOTALL
    )
    assert cut is not None, log
    head, dropped, tail = cut[1].encode(), int(cut[2]), cut[3].encode()
    assert head == "".join(f"step {i:03}\n" for i in range(55)).encode()  # 495 of 500 bytes
    assert tail.startswith(b"step ") and tail.endswith(b"step 999\n" + traceback.encode())
    assert len(head) + len(tail) <= 1000
    assert len(head) + dropped + len(tail) == 9000 + len(traceback.encode())


async def test_an_oversized_input_is_a_413_naming_the_limit(make_api: MakeApi) -> None:
    api = await make_api(max_input_size=100)
    await create(api, "echo", "echo")
    too_big = "x" * 99  # 101 bytes as JSON, with its quotes
    response = await api.post("/v1/executions", json={"function_id": "echo", "input": too_big})
    message = await expect_error(response, 413, "too_large")
    assert "limit is 100" in message and "101" in message
    response = await api.post(
        "/v1/executions", json={"function_id": "echo", "input": too_big, "sync": False}
    )
    assert "limit is 100" in await expect_error(response, 413, "too_large")
    response = await api.post("/v1/functions/echo/invoke", json={"data": "y" * 200})
    assert "limit is 100" in await expect_error(response, 413, "too_large")
    assert (await (await api.get("/v1/executions")).json())["executions"] == []
    at_limit = "x" * 98  # exactly 100 bytes as JSON
    assert (await run(api, "echo", at_limit))["result"] == at_limit


async def test_a_malformed_form_is_a_400(api: Client) -> None:
    for headers, body in (
        ({"Content-Type": "multipart/form-data"}, b""),  # no boundary
        ({"Content-Type": "multipart/form-data; boundary=X"}, b"--X\r\n[]--X--\r\n"),
    ):
        for method, path in (("POST", "/v1/functions"), ("PUT", "/v1/functions/any")):
            response = await api.request(method, path, headers=headers, data=body)
            message = await expect_error(response, 400, "bad_request")
            assert "not a valid form" in message


async def test_nul_characters_are_refused_where_text_is_kept(api: Client) -> None:
    await create(api, "echo", "echo")
    for path in ("/v1/functions/a%00b", "/v1/executions?function_name=a%00b"):
        await expect_error(await api.get(path), 400, "validation_error")
    for path, body in (
        ("/v1/runtimes", {"name": "rt", "image": "a\x00b"}),
        ("/v1/executions", {"function_id": "echo", "description": "a\x00b"}),
        ("/v1/aliases", {"name": "a\x00b", "function_id": "echo"}),
    ):
        message = await expect_error(await api.post(path, json=body), 400, "validation_error")
        assert "NUL" in message
    # An input is JSON, kept as JSON: a NUL in it is fine.
    record = await run(api, "echo", {"name": "a\x00b"})
    assert record["result"] == {"name": "a\x00b"}


async def test_numbers_beyond_32_bits_are_a_400_and_memory_beyond_them_is_kept(
    api: Client,
) -> None:
    await create(api, "echo", "echo", memory_size=str(4 * 1024**3))
    function = await (await api.get("/v1/functions/echo")).json()
    assert function["memory_size"] == 4 * 1024**3
    version = await (await api.post("/v1/functions/echo/versions")).json()
    assert version["memory_size"] == 4 * 1024**3
    for method, path in (
        ("GET", "/v1/functions/echo/versions/3000000000"),
        ("DELETE", "/v1/functions/echo/versions/3000000000"),
        ("POST", "/v1/functions/echo/invoke?version=3000000000"),
        ("GET", "/v1/executions?function_version=3000000000"),
        ("DELETE", "/v1/executions?keep_last=3000000000"),
    ):
        response = await api.request(method, path)
        message = await expect_error(response, 400, "validation_error")
        assert "between 0 and 2147483647" in message, (method, path)


async def test_a_zip_bomb_and_entries_leaving_the_package_are_refused(api: Client) -> None:
    def zipped(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return buffer.getvalue()

    main = b"def main(event):\n    return event\n"
    # 300 MiB of zeros deflate to about 300 KiB: far below the upload limit, far above the
    # unpacked one (64 MiB).
    bomb = zipped({"main.py": main, "zeros.bin": b"\0" * (300 * 1024 * 1024)})
    assert len(bomb) < 1024 * 1024
    message = await expect_error(
        await api.post("/v1/functions", data=form("bomb", data=bomb)), 413, "too_large"
    )
    assert "unpacks to" in message
    for name in ("../evil.py", "/etc/evil.py", "lib/../../evil.py"):
        data = zipped({"main.py": main, name: b"x = 1\n"})
        response = await api.post("/v1/functions", data=form("escape", data=data))
        assert "leaves the package" in await expect_error(response, 400, "invalid_package")
    assert (await (await api.get("/v1/functions")).json())["functions"] == []


# --- what the API does not understand ----------------------------------------------------


async def test_unknown_fields_are_a_400_naming_them(api: Client) -> None:
    await create(api, "echo", "echo")
    response = await api.post("/v1/executions", json={"function_id": "echo", "inptu": 1})
    message = await expect_error(response, 400, "validation_error")
    assert "unknown field 'inptu'" in message and "input" in message  # the fields it takes
    assert (await response.json())["error"]["unknown_fields"] == ["inptu"]
    assert (await (await api.get("/v1/executions")).json())["executions"] == []
    # A form of a function create or update, and its JSON body.
    source = (FUNCTIONS / "echo.py").read_text()
    for method, path, name in (
        ("POST", "/v1/functions", "new"),
        ("PUT", "/v1/functions/echo", None),
    ):
        fields = {"package": source, "timout": "5", **({"name": name} if name else {})}
        response = await api.request(method, path, data=fields)
        assert "'timout'" in await expect_error(response, 400, "validation_error")
        response = await api.request(method, path, json={**fields, "package": b64(b"")})
        assert "'timout'" in await expect_error(response, 400, "validation_error")
    assert await function_names(api) == ["echo"]
    assert (await (await api.get("/v1/functions/echo")).json())["timeout"] == 60
    # A file in another field than `package` is not dropped either.
    upload = form("filed", data=zipped({"main.py": source}))
    upload.add_field("environment", b"{}", filename="env.json")
    response = await api.post("/v1/functions", data=upload)
    assert "'environment' is a file" in await expect_error(response, 400, "validation_error")
    # Every other route: several unknown fields are all named, nested ones by their path.
    await api.post("/v1/functions/echo/versions")
    for method, path, body, named in (
        ("POST", "/v1/runtimes", {"name": "rt", "image": "x:1", "imgae": "y"}, "'imgae'"),
        ("PUT", "/v1/runtimes/python3", {"descripton": "x"}, "'descripton'"),
        ("POST", "/v1/functions/echo/versions", {"descripton": "x"}, "'descripton'"),
        ("POST", "/v1/aliases", {"name": "a", "function_id": "echo", "vesion": 1}, "'vesion'"),
        (
            "PUT",
            "/v1/aliases/any",
            {"routing": {"version": 1, "wieght": 0.5}, "x": 1},
            "fields 'routing.wieght', 'x'",
        ),
        ("POST", "/v1/executions/any/cancel", {"kil": True}, "'kil'"),
        ("POST", "/v1/tokens", {"rol": "admin"}, "'rol'"),
    ):
        response = await api.request(method, path, json=body)
        assert named in await expect_error(response, 400, "validation_error"), path
    # The body of /invoke is the function's input: any field is the function's business.
    response = await api.post("/v1/functions/echo/invoke", json={"inptu": 1})
    assert response.status == 200, await response.text()
    assert await response.json() == {"inptu": 1}


async def test_what_qinling_clients_send_is_accepted(api: Client) -> None:
    # A runtime: `is_public` and `trusted` (true unless told otherwise); the record says what
    # a runtime registered over the API is.
    response = await api.post(
        "/v1/runtimes",
        json={"image": "example/rt:1", "name": "qrt", "is_public": True, "trusted": True},
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["is_public"] is False
    # An update with a Swift source, flattened into the form: refused as a source, not a field.
    await create(api, "echo", "echo")
    response = await api.put(
        "/v1/functions/echo", data=[("source", "swift"), ("swift", "container"), ("swift", "o")]
    )
    assert "'swift' is not supported" in await expect_error(response, 400, "validation_error")


async def test_function_names_that_look_like_uuids_are_refused(api: Client) -> None:
    for name in (str(uuid.uuid4()), uuid.uuid4().hex, str(uuid.uuid4()).upper()):
        response = await api.post("/v1/functions", data=form(name, FUNCTIONS / "echo.py"))
        assert "looks like a UUID" in await expect_error(response, 400, "validation_error")
    function = await create(api, "echo", "echo")
    response = await api.put("/v1/functions/echo", data={"name": function["id"]})
    assert "looks like a UUID" in await expect_error(response, 400, "validation_error")
    assert await function_names(api) == ["echo"]
    # Names with hex and dashes that are no UUID are fine.
    await create(api, "deadbeef-2024", "echo")


async def test_a_body_of_a_type_a_route_does_not_read_is_a_415(api: Client) -> None:
    await create(api, "echo", "echo")
    for method, path, kind in (
        ("POST", "/v1/executions", "application/octet-stream"),
        ("POST", "/v1/functions/echo/invoke", "text/plain"),
        ("POST", "/v1/functions/echo/invoke", "application/octet-stream"),
        ("POST", "/v1/aliases", "multipart/form-data; boundary=X"),
        ("POST", "/v1/functions", "application/octet-stream"),
        ("PUT", "/v1/functions/echo", "text/plain"),
    ):
        response = await api.request(
            method, path, data=b'{"function_id": "echo"}', headers={"Content-Type": kind}
        )
        message = await expect_error(response, 415, "unsupported_media_type")
        assert kind.split(";")[0] in message and "application/json" in message
    assert (await (await api.get("/v1/executions")).json())["executions"] == []
    # What curl -d sends (a form type), or no type at all, is read as JSON; so is `+json`.
    for headers in (
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/vnd.example+json"},
        {},
    ):
        response = await api.post(
            "/v1/functions/echo/invoke",
            data=b'{"n": 10}',
            headers=headers,
            skip_auto_headers=["Content-Type"],
        )
        assert response.status == 200, (headers, await response.text())
        assert await response.json() == {"n": 10}
    # A real form sent to a JSON route says what went wrong.
    response = await api.post("/v1/tokens", data={"name": "deploy"})
    assert "sent as a form" in await expect_error(response, 400, "malformed_json")


async def test_a_body_is_measured_before_it_is_read(make_api: MakeApi) -> None:
    api = await make_api(max_input_size=1000)
    limit = 2 * 1000 + 64 * 1024  # room for an input at its limit, pretty or as a string
    await create(api, "echo", "echo")
    # Announced too long: answered at once, though the body never comes.
    url = api.make_url("/v1/functions/echo/invoke")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        f"POST {url.path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {limit + 1}\r\n\r\n".encode()
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 60)
    writer.close()
    assert status.startswith(b"HTTP/1.1 413"), status
    # Sent in chunks without a length: read up to the limit only.

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    for path in ("/v1/functions/echo/invoke", "/v1/executions", "/v1/aliases"):
        response = await api.post(path, data=chunks(), headers={"Content-Type": "application/json"})
        assert str(limit) in await expect_error(response, 413, "too_large"), path
    assert (await (await api.get("/v1/executions")).json())["executions"] == []
    # An input at its limit as a string holding pretty JSON fits (and is measured compact).
    pretty = json.dumps({"data": "x" * 980}, indent=8)
    record = await run(api, "echo", pretty)
    assert record["result"] == {"data": "x" * 980}


async def test_a_large_package_is_read_and_parsed_off_the_event_loop(api: Client) -> None:
    """A package of megabytes, as a multipart file (aiohttp keeps it on disk) and as base64 in
    JSON: reading and parsing it would hold up every other request (the blockbuster fixture
    fails this test on a blocking call)."""
    data = big_source(8 * 1024 * 1024)
    upload = aiohttp.FormData({"name": "bigform"})
    upload.add_field("package", io.BytesIO(data), filename="big.py")
    response = await api.post("/v1/functions", data=upload)
    assert response.status == 201, await response.text()
    body = {"name": "bigjson", "package": b64(data), "filename": "big.py"}
    response = await api.post(
        "/v1/functions",
        data=io.BytesIO(json.dumps(body).encode()),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 201, await response.text()
    for name in ("bigform", "bigjson"):
        assert (await run(api, name))["result"] == "big"
