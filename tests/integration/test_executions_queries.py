"""Reading executions back: retention's second stage, list filters, sorting and paging.

Functions run as local processes; each test runs on SQLite and on PostgreSQL, since the
filters, sorting and keyset paging are SQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from yarl import URL

from spinlet.api.app import create_app
from spinlet.api.keys import SERVICES
from spinlet.settings import Settings
from tests.helpers import eventually
from tests.integration.test_api import create, expect_error, run

Client = TestClient[Any, Any]
MakeApi = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_api(
    database_url: str,
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
) -> MakeApi:
    """The API on the process backend with one worker and echo, fail and sleep functions.

    `database_url` comes first so that the database outlives the app (fixtures are torn down
    in the reverse order of their setup)."""

    async def make(**changes: Any) -> Client:
        evolved = settings.evolve(
            backend="process",
            database_url=database_url,
            workers=1,
            stem_cells=0,
            retention_interval=3600,
            **changes,
        )
        client = await aiohttp_client(create_app(evolved))
        for name in ("echo", "fail", "sleep"):
            await create(client, name, name)
        return client

    return make


@pytest.fixture
async def api(make_api: MakeApi) -> Client:
    return await make_api()


async def fire(api: Client, function: str, input: Any = None) -> dict[str, Any]:
    response = await api.post(
        "/v1/executions", json={"function_id": function, "input": input, "sync": False}
    )
    assert response.status == 202, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def listed(api: Client, **params: str) -> list[dict[str, Any]]:
    response = await api.get("/v1/executions", params=params)
    assert response.status == 200, await response.text()
    executions: list[dict[str, Any]] = (await response.json())["executions"]
    return executions


async def ids(api: Client, **params: str) -> list[str]:
    return [e["id"] for e in await listed(api, **params)]


async def until_running(api: Client, execution_id: str) -> None:
    async def running() -> bool:
        record = await (await api.get(f"/v1/executions/{execution_id}")).json()
        return bool(record["status"] == "running")

    await eventually(running, within=30)


async def kill(api: Client, execution_id: str) -> None:
    response = await api.post(f"/v1/executions/{execution_id}/cancel", json={"kill": True})
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "cancelled"


# --- retention ---------------------------------------------------------------------------


async def test_after_record_ttl_a_record_is_gone_not_expired(make_api: MakeApi) -> None:
    api = await make_api(result_ttl=0.3, record_ttl=1.5)
    old = await run(api, "echo", "purge me")
    running = await fire(api, "sleep", {"seconds": 60})
    await until_running(api, running["id"])
    await asyncio.sleep(0.5)
    janitor = api.server.app[SERVICES].janitor
    # First stage: the result is gone, the record stays.
    assert await janitor.sweep() == (1, 0)
    result = await api.get(f"/v1/executions/{old['id']}/result")
    assert result.status == 404 and (await result.json())["message"] == "Expired"
    assert (await (await api.get(f"/v1/executions/{old['id']}")).json())["expired"] is True
    await asyncio.sleep(1.2)
    # Second stage: the record itself is purged; the running one is never touched.
    assert await janitor.sweep() == (0, 1)
    for path in ("", "/result", "/log", "/poll"):
        response = await api.get(f"/v1/executions/{old['id']}{path}")
        await expect_error(response, 404, "not_found")
        body = await response.json()
        assert body.get("message") != "Expired", path
    await expect_error(await api.delete(f"/v1/executions/{old['id']}"), 404, "not_found")
    assert await ids(api) == [running["id"]]
    still = await (await api.get(f"/v1/executions/{running['id']}")).json()
    assert still["status"] == "running" and still["expired"] is False
    await kill(api, running["id"])


# --- include_completed and include_output ------------------------------------------------


async def test_include_completed_false_lists_only_pending_executions(api: Client) -> None:
    done = await run(api, "echo", "done")
    busy = await fire(api, "sleep", {"seconds": 60})
    await until_running(api, busy["id"])
    waiting = await fire(api, "echo", "waiting")  # one worker: it stays queued
    pending = await listed(api, include_completed="false")
    assert [(e["id"], e["status"]) for e in pending] == [
        (waiting["id"], "queued"),
        (busy["id"], "running"),
    ]
    assert await ids(api) == [waiting["id"], busy["id"], done["id"]]
    assert await ids(api, include_completed="true") == [waiting["id"], busy["id"], done["id"]]
    assert await ids(api, include_completed="false", status="queued") == [waiting["id"]]
    await expect_error(
        await api.get("/v1/executions", params={"include_completed": "maybe"}),
        400,
        "validation_error",
    )
    await kill(api, waiting["id"])
    await kill(api, busy["id"])
    assert await listed(api, include_completed="false") == []


async def test_include_output_returns_results_and_the_default_omits_them(api: Client) -> None:
    ok = await run(api, "echo", {"answer": 42})
    bad = await run(api, "fail", {"message": "no result"})
    with_output = {e["id"]: e for e in await listed(api, include_output="true")}
    assert with_output[ok["id"]]["result"] == {"answer": 42}
    assert with_output[bad["id"]]["result"] is None
    assert with_output[bad["id"]]["error"]["message"] == "no result"
    for params in ({}, {"include_output": "false"}):
        executions = await listed(api, **params)
        assert {e["id"] for e in executions} == {ok["id"], bad["id"]}
        assert all("result" not in e for e in executions), params
        assert all(e["input"] is not None for e in executions)


# --- filters and sorting -----------------------------------------------------------------


async def test_list_filters(api: Client) -> None:
    first = await run(api, "echo", 1)
    second = await run(api, "echo", 2)
    failed = await run(api, "fail")
    response = await api.post("/v1/functions/echo/versions", json={})
    assert response.status == 201, await response.text()
    assert (await response.json())["version_number"] == 1
    response = await api.post(
        "/v1/executions", json={"function_id": "echo", "function_version": 1, "input": 3}
    )
    assert response.status == 201, await response.text()
    versioned = await response.json()
    assert versioned["function_version"] == 1 and versioned["result"] == 3
    newest_first = [versioned["id"], failed["id"], second["id"], first["id"]]
    assert await ids(api) == newest_first

    assert await ids(api, function_version="eq:0") == [failed["id"], second["id"], first["id"]]
    assert await ids(api, function_version="1") == [versioned["id"]]
    assert await ids(api, status="nin:failed,error") == [
        versioned["id"],
        second["id"],
        first["id"],
    ]
    assert await ids(api, status="in:failed,error") == [failed["id"]]
    assert await ids(api, status="in:success,failed") == newest_first
    assert await ids(api, status="eq:failed") == [failed["id"]]
    # Times as the records show them: gte includes the record itself, lt excludes it.
    assert await ids(api, created_at=f"gte:{second['created_at']}") == newest_first[:3]
    assert await ids(api, created_at=f"gt:{second['created_at']}") == newest_first[:2]
    assert await ids(api, finished_at=f"lt:{second['finished_at']}") == [first["id"]]
    assert await ids(api, finished_at=f"lte:{second['finished_at']}") == [
        second["id"],
        first["id"],
    ]
    assert await ids(api, created_at="gte:2000-01-01T00:00:00Z") == newest_first
    assert await ids(api, created_at="lt:2000-01-01T00:00:00Z") == []
    # Filters combine, also on one field given twice.
    assert await ids(
        api, function_id=first["function_id"], status="neq:failed", function_version="0"
    ) == [second["id"], first["id"]]
    both = [("created_at", f"gte:{first['created_at']}"), ("created_at", "lt:2999-01-01")]
    response = await api.get("/v1/executions", params=[*both, ("status", "success")])
    body = await response.json()
    assert [e["id"] for e in body["executions"]] == [versioned["id"], second["id"], first["id"]]
    for bad in ("function_version=eq:zero", "finished_at=lt:soon", "status=in:success,bogus"):
        await expect_error(await api.get(f"/v1/executions?{bad}"), 400, "validation_error")


async def test_sort_by_function_name_and_status(api: Client) -> None:
    made = [
        await run(api, "fail"),
        await run(api, "echo", 1),
        await run(api, "sleep", {"seconds": 0}),
        await run(api, "fail"),
        await run(api, "echo", 2),
    ]
    by_name = await listed(api, sort_keys="function_name", sort_dirs="asc")
    names = [e["function_name"] for e in by_name]
    assert names == ["echo", "echo", "fail", "fail", "sleep"]
    for name in ("echo", "fail"):  # ties in id order, the same direction
        tied = [e["id"] for e in by_name if e["function_name"] == name]
        assert tied == sorted(tied)
    by_status = await listed(api, sort_keys="status", sort_dirs="asc")
    assert [e["status"] for e in by_status] == ["failed"] * 2 + ["success"] * 3
    assert {e["id"] for e in by_status} == {e["id"] for e in made}
    descending = await listed(api, sort_keys="status", sort_dirs="desc")
    assert [e["status"] for e in descending] == ["success"] * 3 + ["failed"] * 2
    two_keys = await listed(api, sort_keys="status,function_name", sort_dirs="asc,desc")
    assert [(e["status"], e["function_name"]) for e in two_keys] == [
        ("failed", "fail"),
        ("failed", "fail"),
        ("success", "sleep"),
        ("success", "echo"),
        ("success", "echo"),
    ]
    await expect_error(
        await api.get("/v1/executions", params={"sort_keys": "status", "sort_dirs": "up"}),
        400,
        "validation_error",
    )


# --- paging ------------------------------------------------------------------------------


async def follow(api: Client, first: str, params: dict[str, str]) -> list[list[str]]:
    """Every page from the first one to the end, following the `next` links."""
    response = await api.get(first, params=params)
    pages: list[list[str]] = []
    for _ in range(50):
        assert response.status == 200, await response.text()
        body = await response.json()
        pages.append([e["id"] for e in body["executions"]])
        if body["next"] is None:
            return pages
        link = URL(body["next"])
        assert link.is_absolute() and link.path == "/v1/executions"
        for key, value in params.items():
            assert link.query.get(key) == value, key
        response = await api.get(link.path_qs)
    raise AssertionError("the next links never end")


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "3"},
        {"limit": "7"},
        {"limit": "1", "sort_dirs": "asc"},
        {"limit": "2", "sort_keys": "status,function_name", "sort_dirs": "asc"},
        {"limit": "2", "sort_keys": "function_version", "sort_dirs": "desc"},
        {"limit": "2", "status": "success"},
    ],
    ids=lambda params: "&".join(f"{k}={v}" for k, v in params.items()),
)
async def test_paging_visits_every_record_once(api: Client, params: dict[str, str]) -> None:
    for i in range(7):
        await run(api, "fail" if i % 3 == 0 else "echo", i)
    everything = await ids(api, **{k: v for k, v in params.items() if k != "limit"})
    pages = await follow(api, "/v1/executions", params)
    limit = int(params["limit"])
    assert all(len(page) <= limit for page in pages)
    assert all(len(page) == limit for page in pages[:-1])
    seen = [execution_id for page in pages for execution_id in page]
    assert seen == everything
    assert len(set(seen)) == len(seen)


async def test_paging_keeps_a_time_filter(api: Client) -> None:
    made = [await run(api, "echo", i) for i in range(5)]
    since = made[1]["created_at"]  # an offset time: "+00:00" must survive the next link
    assert "+" in since
    pages = await follow(api, "/v1/executions", {"limit": "2", "created_at": f"gte:{since}"})
    seen = [execution_id for page in pages for execution_id in page]
    assert seen == [e["id"] for e in reversed(made[1:])]


async def test_an_unknown_marker_is_a_404(api: Client) -> None:
    await run(api, "echo", 1)
    response = await api.get(
        "/v1/executions", params={"marker": "00000000-0000-0000-0000-000000000000"}
    )
    await expect_error(response, 404, "not_found")


# --- a fleet in a rolling upgrade ----------------------------------------------------------


async def test_an_execution_in_a_status_this_node_does_not_know_reads_as_unknown(
    api: Client,
) -> None:
    """A newer node wrote a status (and reason) this node does not know: the record is read,
    listed and filtered as `unknown`, never claimed, cancelled or purged by this node."""
    record = await run(api, "echo", "from the future")
    store = api.server.app[SERVICES].store
    async with store.db.transaction() as conn:
        await conn.execute(
            text(
                "UPDATE executions SET status = 'paused', status_reason = 'preempted' "
                "WHERE id = :id"
            ),
            {"id": record["id"]},
        )
    response = await api.get(f"/v1/executions/{record['id']}")
    assert response.status == 200, await response.text()
    seen = await response.json()
    assert (seen["status"], seen["status_reason"]) == ("unknown", "preempted")
    assert [e["status"] for e in await listed(api)] == ["unknown"]
    assert await ids(api, include_completed="false") == [record["id"]]  # not known to be done
    known = await run(api, "echo", "from today")
    assert await ids(api, status="unknown") == [record["id"]]
    assert await ids(api, status="in:success,unknown") == [known["id"], record["id"]]
    assert await ids(api, status="neq:unknown") == [known["id"]]
    assert await ids(api, status="nin:unknown,running") == [known["id"]]
    # A status this node does not know is not one it can name: `unknown` stands for them all.
    await expect_error(await api.get("/v1/executions?status=paused"), 400, "validation_error")
    await expect_error(await api.post(f"/v1/executions/{record['id']}/cancel"), 409, "conflict")
    purged = await api.delete("/v1/executions", params={"keep_last": "0"})
    assert (await purged.json()) == {"deleted": 1}  # the one this node knows is done
    assert await ids(api) == [record["id"]]


async def test_a_function_or_runtime_in_a_status_this_node_does_not_know_reads_as_unknown(
    api: Client,
) -> None:
    """A newer node wrote a function's and a runtime's status this node does not know: both
    read and list as `unknown`, and a change made here keeps the status as it was written."""
    store = api.server.app[SERVICES].store
    async with store.db.transaction() as conn:
        await conn.execute(text("UPDATE functions SET status = 'frozen' WHERE name = 'echo'"))
        await conn.execute(text("UPDATE runtimes SET status = 'draining' WHERE name = 'python3'"))
    for path, field in (("/v1/functions", "functions"), ("/v1/runtimes", "runtimes")):
        response = await api.get(path)
        assert response.status == 200, await response.text()
        statuses = {r["name"]: r["status"] for r in (await response.json())[field]}
        assert statuses["echo" if field == "functions" else "python3"] == "unknown"
    changed = await api.put("/v1/functions/echo", data={"description": "changed here"})
    assert (await changed.json())["status"] == "unknown"
    changed = await api.put("/v1/runtimes/python3", json={"description": "changed here"})
    assert (await changed.json())["status"] == "unknown"
    async with store.db.connect() as conn:
        stored = await conn.execute(
            text(
                "SELECT f.status, r.status FROM functions f JOIN runtimes r "
                "ON r.id = f.runtime_id WHERE f.name = 'echo'"
            )
        )
        assert tuple(stored.one()) == ("frozen", "draining")


async def test_an_id_prefix_lists_the_executions_whose_id_starts_so(api: Client) -> None:
    """A range over the primary key, right on both databases whatever their collation."""
    chosen = [
        "38eda13d-ffff-4fff-bfff-ffffffffffff",
        "38eda13e-0000-4000-8000-000000000000",
        "38eda13e-9fff-4000-8000-000000000001",
        "38eda13e-a000-4000-8000-000000000002",
        "38eda13e-ffff-4fff-bfff-ffffffffffff",
        "38eda13f-0000-4000-8000-000000000000",
        "ffffffff-ffff-4fff-bfff-ffffffffffff",
    ]
    for execution_id in chosen:
        body = {"function_id": "echo", "input": 1, "id": execution_id}
        assert (await api.post("/v1/executions", json=body)).status == 201
    for prefix in ("38eda13e", "38EDA13E-", "38eda13e9", "38eda13e-a", "38eda13", "f", "3"):
        digits = prefix.replace("-", "").lower()
        expected = {i for i in chosen if i.replace("-", "").startswith(digits)}
        assert set(await ids(api, id_prefix=prefix)) == expected, prefix
    await expect_error(await api.get("/v1/executions?id_prefix=xyz"), 400, "validation_error")
