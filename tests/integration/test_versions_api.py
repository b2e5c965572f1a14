"""Versions and aliases through the HTTP API, with functions running for real (local processes).

The same release flow in Docker containers is in test_versions_docker.py.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.settings import Settings
from tests.helpers import make_package
from tests.integration.test_api import expect_error, form

Client = TestClient[Any, Any]


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> AsyncIterator[Client]:
    yield await aiohttp_client(create_app(settings.evolve(backend="process")))


#: A function whose every answer says which code it is and which process served it.
TAGGED = """
import os, socket

def main(event, context):
    print("{tag} ran as version", context.function_version)
    return {{"code": "{tag}", "pid": os.getpid(), "host": socket.gethostname()}}
"""


def tagged(tag: str) -> bytes:
    return make_package(TAGGED.format(tag=tag))


async def upload(api: Client, name: str, tag: str) -> dict[str, Any]:
    response = await api.post("/v1/functions", data=form(name, data=tagged(tag)))
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def change_code(api: Client, name: str, tag: str) -> None:
    body = aiohttp.FormData()
    body.add_field("package", tagged(tag), filename="package.zip")
    response = await api.put(f"/v1/functions/{name}", data=body)
    assert response.status == 200, await response.text()


async def publish(api: Client, function: str, status: int = 201, **body: Any) -> dict[str, Any]:
    response = await api.post(f"/v1/functions/{function}/versions", json=body or None)
    assert response.status == status, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def execute(api: Client, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/executions", json=body)
    assert response.status == 201, await response.text()
    record: dict[str, Any] = await response.json()
    assert record["status"] == "success", record
    return record


async def make_alias(api: Client, status: int = 201, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/aliases", json=body)
    assert response.status == status, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def put_alias(api: Client, name: str, **body: Any) -> dict[str, Any]:
    response = await api.put(f"/v1/aliases/{name}", json=body)
    assert response.status == 200, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def log_of(api: Client, execution: dict[str, Any]) -> str:
    return await (await api.get(f"/v1/executions/{execution['id']}/log")).text()


async def test_publish_numbers_and_snapshots(api: Client) -> None:
    function = await upload(api, "shop", "A")
    assert function["latest_version"] == 0
    first = await publish(api, "shop", description="first release")
    assert first["version_number"] == 1 and first["function_id"] == function["id"]
    assert first["description"] == "first release" and first["code"] == function["code"]
    assert first["entry"] == "main.main" and first["image_id"]
    # Nothing changed: the latest version comes back (200), no duplicate.
    again = await publish(api, "shop", status=200)
    assert again == first
    await change_code(api, "shop", "B")
    changed = await (await api.get("/v1/functions/shop")).json()
    second = await publish(api, function["id"])
    assert second["version_number"] == 2 and second["code"] != first["code"]
    assert second["created_at"] > changed["updated_at"]
    # Configuration is part of the snapshot too.
    response = await api.put("/v1/functions/shop", json={"timeout": 12})
    assert response.status == 200
    third = await publish(api, "shop")
    assert (third["version_number"], third["timeout"], second["timeout"]) == (3, 12, 60)
    assert (await (await api.get("/v1/functions/shop")).json())["latest_version"] == 3

    listed = await (await api.get("/v1/functions/shop/versions")).json()
    assert [v["version_number"] for v in listed["function_versions"]] == [1, 2, 3]
    shown = await (await api.get(f"/v1/functions/{function['id']}/versions/1")).json()
    assert shown == first

    # Numbers are never reused, even after a delete.
    assert (await api.delete("/v1/functions/shop/versions/3")).status == 204
    await expect_error(await api.get("/v1/functions/shop/versions/3"), 404, "not_found")
    response = await api.put("/v1/functions/shop", json={"timeout": 13})
    assert (await publish(api, "shop"))["version_number"] == 4


async def test_download_a_version_and_version_zero(api: Client) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await change_code(api, "shop", "B")
    for number, tag in ((1, "A"), (0, "B")):
        response = await api.get(f"/v1/functions/shop/versions/{number}?download=true")
        assert response.status == 200 and response.content_type == "application/zip"
        with zipfile.ZipFile(io.BytesIO(await response.read())) as archive:
            assert f'"code": "{tag}"' in archive.read("main.py").decode()
    current = await (await api.get("/v1/functions/shop/versions/0")).json()
    shop = await (await api.get("/v1/functions/shop")).json()
    assert current["version_number"] == 0
    assert (current["id"], current["created_at"]) == (shop["id"], shop["updated_at"])
    assert current["code"] == (await (await api.get("/v1/functions/shop")).json())["code"]
    await expect_error(await api.delete("/v1/functions/shop/versions/0"), 403, "forbidden")
    await expect_error(await api.get("/v1/functions/shop/versions/x"), 400, "validation_error")
    await expect_error(await api.get("/v1/functions/nope/versions"), 404, "not_found")


async def test_each_version_alias_and_version_zero_run_their_own_code(api: Client) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await change_code(api, "shop", "B")
    await publish(api, "shop")
    await change_code(api, "shop", "C")
    await make_alias(api, name="stable", function_id="shop", function_version=1)

    runs = {
        "v1": await execute(api, function_id="shop", function_version=1),
        "v2": await execute(api, function_id="shop", function_version=2),
        "alias": await execute(api, function_alias="stable"),
        "v0": await execute(api, function_id="shop", function_version=0),
    }
    assert {k: r["result"]["code"] for k, r in runs.items()} == {
        "v1": "A",
        "v2": "B",
        "alias": "A",
        "v0": "C",
    }
    assert {k: (r["function_version"], r["function_alias"]) for k, r in runs.items()} == {
        "v1": (1, None),
        "v2": (2, None),
        "alias": (1, "stable"),
        "v0": (0, None),
    }
    assert await log_of(api, runs["v2"]) == "B ran as version 2\n"
    assert await log_of(api, runs["alias"]) == "A ran as version 1\n"

    # Filtering the record list by what ran.
    listed = await api.get("/v1/executions", params={"function_alias": "stable"})
    assert [e["id"] for e in (await listed.json())["executions"]] == [runs["alias"]["id"]]

    # The invoke endpoint takes the same choices.
    response = await api.post("/v1/functions/shop/invoke?version=2", json={})
    assert (await response.json())["code"] == "B"
    response = await api.post("/v1/functions/shop/invoke?alias=stable", json={})
    assert (await response.json())["code"] == "A"


async def test_containers_never_serve_two_versions(api: Client) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await change_code(api, "shop", "B")
    await publish(api, "shop")
    pid = {}
    for version in (1, 2, 0):
        pid[version] = (await execute(api, function_id="shop", function_version=version))["result"][
            "pid"
        ]
    assert len(set(pid.values())) == 3
    again = await execute(api, function_id="shop", function_version=1)
    assert again["result"]["pid"] == pid[1] and again["start_kind"] == "warm"
    # New code for the function: the next version-0 execution runs it, in a new process.
    await change_code(api, "shop", "C")
    latest = await execute(api, function_id="shop")
    assert latest["result"]["code"] == "C" and latest["result"]["pid"] != pid[0]
    assert (await execute(api, function_id="shop", function_version=2))["result"] == {
        "code": "B",
        "pid": pid[2],
        "host": latest["result"]["host"],
    }


async def test_re_pointing_an_alias_takes_effect_on_the_next_execution(api: Client) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await change_code(api, "shop", "B")
    await publish(api, "shop")
    await make_alias(api, name="live", function_id="shop", function_version=1)
    assert (await execute(api, function_alias="live"))["result"]["code"] == "A"
    await put_alias(api, "live", function_version=2)
    assert (await execute(api, function_alias="live"))["result"]["code"] == "B"
    await put_alias(api, "live", function_version=0)
    await change_code(api, "shop", "C")
    assert (await execute(api, function_alias="live"))["result"]["code"] == "C"
    await put_alias(api, "live", function_version=1)  # roll back
    rolled_back = await execute(api, function_alias="live")
    assert (rolled_back["result"]["code"], rolled_back["function_version"]) == ("A", 1)


async def test_alias_records_and_updates_with_nulls(api: Client) -> None:
    function = await upload(api, "shop", "A")
    await publish(api, "shop")
    await upload(api, "other", "X")
    created = await make_alias(
        api, name="live", function_id="shop", function_version=1, description="prod"
    )
    assert {k: created[k] for k in ("name", "function_id", "function_version", "description")} == {
        "name": "live",
        "function_id": function["id"],
        "function_version": 1,
        "description": "prod",
    }
    assert created["routing"] is None
    # Several aliases may point at the same version.
    await make_alias(api, name="also-live", function_id=function["id"], function_version=1)
    # As the Qinling client sends it: nulls for what is not changed, the version as a string.
    updated = await put_alias(
        api, "live", function_id=None, function_version=None, description="production"
    )
    assert (updated["function_version"], updated["description"]) == (1, "production")
    updated = await put_alias(api, "live", function_id=None, function_version="0")
    assert (updated["function_version"], updated["description"]) == (0, "production")
    moved = await put_alias(api, "live", function_id="other")
    assert moved["function_id"] != function["id"] and moved["function_version"] == 0
    assert await (await api.get("/v1/aliases/live")).json() == moved

    listed = (await (await api.get("/v1/aliases")).json())["function_aliases"]
    assert [a["name"] for a in listed] == ["also-live", "live"]
    filtered = await api.get("/v1/aliases", params={"function_id": "shop"})
    assert [a["name"] for a in (await filtered.json())["function_aliases"]] == ["also-live"]
    assert (await api.delete("/v1/aliases/live")).status == 204
    await expect_error(await api.get("/v1/aliases/live"), 404, "not_found")
    await expect_error(await api.delete("/v1/aliases/live"), 404, "not_found")


async def test_alias_and_routing_errors(api: Client) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await make_alias(api, name="live", function_id="shop", function_version=1)

    async def refused(status: int, code: str, **body: Any) -> str:
        return await expect_error(await api.post("/v1/aliases", json=body), status, code)

    assert "version 2" in await refused(
        404, "not_found", name="x", function_id="shop", function_version=2
    )
    await refused(404, "not_found", name="x", function_id="nope")
    await refused(409, "already_exists", name="live", function_id="shop")
    await refused(400, "validation_error", name="bad name!", function_id="shop")
    await refused(400, "validation_error", name="x", function_id="shop", function_version=-1)
    for weight in (0, 1, 1.5, -0.1):
        message = await refused(
            400,
            "validation_error",
            name="x",
            function_id="shop",
            routing={"version": 1, "weight": weight},
        )
        assert "between 0 and 1" in message
    assert "version 7" in await refused(
        404, "not_found", name="x", function_id="shop", routing={"version": 7, "weight": 0.5}
    )
    await refused(
        400,
        "validation_error",
        name="x",
        function_id="shop",
        function_version=1,
        routing={"version": 1, "weight": 0.5},
    )
    await refused(400, "validation_error", name="x", function_id="shop", routing={"weight": 0.5})
    response = await api.put("/v1/aliases/live", json={"function_version": 9})
    await expect_error(response, 404, "not_found")
    response = await api.put("/v1/aliases/live", json={"routing": {"version": 0, "weight": 2}})
    await expect_error(response, 400, "validation_error")
    response = await api.put("/v1/aliases/live", json={"routing": {"version": 8, "weight": 0.1}})
    assert "version 8" in await expect_error(response, 404, "not_found")
    assert (await (await api.get("/v1/aliases/live")).json())["routing"] is None  # unchanged
    await expect_error(await api.put("/v1/aliases/nope", json={}), 404, "not_found")
    assert (await (await api.get("/v1/aliases/live")).json())["function_version"] == 1


async def test_execution_alias_errors(api: Client) -> None:
    await upload(api, "shop", "A")
    await upload(api, "other", "X")
    await make_alias(api, name="live", function_id="shop")

    async def refused(status: int, code: str, **body: Any) -> None:
        await expect_error(await api.post("/v1/executions", json=body), status, code)

    await refused(404, "not_found", function_id="shop", function_version=3)
    await refused(404, "not_found", function_alias="nope")
    await refused(400, "validation_error", function_alias="live", function_version=2)
    await refused(400, "validation_error", function_alias="live", function_id="other")
    # Naming the alias's own function is fine (the Qinling client sends both).
    record = await execute(api, function_alias="live", function_id="shop", function_version=0)
    assert record["function_alias"] == "live"


async def test_delete_rules(api: Client, settings: Settings) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await change_code(api, "shop", "B")
    await publish(api, "shop")
    await make_alias(api, name="live", function_id="shop", function_version=1)
    await make_alias(api, name="canary", function_id="shop", routing={"version": 2, "weight": 0.1})
    message = await expect_error(
        await api.delete("/v1/functions/shop/versions/1"), 403, "forbidden"
    )
    assert "alias 'live'" in message
    response = await api.delete("/v1/functions/shop/versions/2")
    body = await response.json()
    assert response.status == 403 and body["error"]["aliases"] == ["canary"]
    message = await expect_error(await api.delete("/v1/functions/shop"), 403, "forbidden")
    assert "'canary', 'live'" in message

    executed = await execute(api, function_id="shop", function_version=1)
    for name in ("live", "canary"):
        assert (await api.delete(f"/v1/aliases/{name}")).status == 204
    assert (await api.delete("/v1/functions/shop")).status == 204
    await expect_error(await api.get("/v1/functions/shop/versions"), 404, "not_found")
    kept = await (await api.get(f"/v1/executions/{executed['id']}")).json()
    assert (kept["function_version"], kept["result"]["code"]) == (1, "A")
    # No function or version references the packages any more: their blobs are gone.
    assert not [p for p in settings.packages_dir.rglob("*") if p.is_file()]


async def test_package_blobs_are_shared_and_dropped_when_unused(
    api: Client, settings: Settings
) -> None:
    def blobs() -> int:
        return len([p for p in settings.packages_dir.rglob("*") if p.is_file()])

    await upload(api, "one", "same")
    await upload(api, "two", "same")
    assert blobs() == 1
    await publish(api, "one")
    await change_code(api, "one", "new")
    assert blobs() == 2  # version 1 of "one" and function "two" share the first
    assert (await api.delete("/v1/functions/two")).status == 204
    assert blobs() == 2  # still used by version 1
    assert (await api.delete("/v1/functions/one/versions/1")).status == 204
    assert blobs() == 1


async def test_the_canary_share_matches_the_weight(api: Client) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await change_code(api, "shop", "B")
    await publish(api, "shop")
    await make_alias(
        api,
        name="live",
        function_id="shop",
        function_version=1,
        routing={"version": 2, "weight": 0.2},
    )
    total = 1000
    ran = {1: 0, 2: 0}
    for _ in range(total):
        record = await execute(api, function_alias="live")
        assert record["result"]["code"] == {1: "A", 2: "B"}[record["function_version"]]
        ran[record["function_version"]] += 1
    share = ran[2] / total
    print(f"canary weight 0.2: {ran[2]} of {total} executions ran version 2 ({share:.3f})")
    # 5 standard deviations of a binomial share (sqrt(0.2 * 0.8 / 1000) = 0.0126).
    assert abs(share - 0.2) < 0.064
    # Promoting the canary's version ends the canary.
    promoted = await put_alias(api, "live", function_version=2)
    assert promoted["routing"] is None
    assert {(await execute(api, function_alias="live"))["function_version"] for _ in range(20)} == {
        2
    }
    # `{}` removes a canary.
    await put_alias(api, "live", routing={"version": 1, "weight": 0.5})
    assert (await put_alias(api, "live", routing={}))["routing"] is None


async def test_an_async_execution_runs_the_version_chosen_when_it_was_created(
    api: Client,
) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await change_code(api, "shop", "B")
    await make_alias(api, name="live", function_id="shop", function_version=1)
    response = await api.post(
        "/v1/executions", json={"function_alias": "live", "sync": False, "input": {}}
    )
    assert response.status == 202, await response.text()
    queued = await response.json()
    assert (queued["function_version"], queued["function_alias"]) == (1, "live")
    # Re-pointed before a worker ran it: the record says version 1, and version 1 runs.
    await put_alias(api, "live", function_version=0)
    done = await (await api.get(f"/v1/executions/{queued['id']}?wait=30")).json()
    assert (done["status"], done["result"]["code"], done["function_version"]) == (
        "success",
        "A",
        1,
    )
