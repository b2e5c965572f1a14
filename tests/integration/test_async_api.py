"""Asynchronous executions and the complete executions API, on both backends.

Each test runs with functions in local processes (fast) and in real Docker containers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from spinlet.api.keys import SERVICES
from tests.integration.conftest import ApiFactory
from tests.integration.test_api import create, expect_error, run

Client = TestClient[Any, Any]


@pytest.fixture
async def api(api_factory: ApiFactory) -> Client:
    # A generous cancel grace: a graceful cancel must let a short execution finish even when
    # its container is slow to start on a loaded machine.
    client = await api_factory(workers=1, result_ttl=0.5, retention_interval=3600, cancel_grace=10)
    await create(client, "echo", "echo")
    await create(client, "fail", "fail")
    await create(client, "sleep", "sleep")
    return client


async def fire(api: Client, function: str, input: Any = None, **extra: Any) -> dict[str, Any]:
    body = {"function_id": function, "input": input, "sync": False, **extra}
    response = await api.post("/v1/executions", json=body)
    assert response.status == 202, await response.text()
    record: dict[str, Any] = await response.json()
    assert response.headers["Location"] == f"/v1/executions/{record['id']}"
    assert record["status"] == "queued"
    return record


async def wait(api: Client, execution_id: str, seconds: float = 60) -> dict[str, Any]:
    response = await api.get(f"/v1/executions/{execution_id}?wait={seconds}")
    assert response.status == 200
    record: dict[str, Any] = await response.json()
    return record


async def test_async_success_with_wait(api: Client) -> None:
    record = await fire(api, "echo", {"a": 1})
    done = await wait(api, record["id"])
    assert done["status"] == "success" and done["result"] == {"a": 1}
    assert done["sync"] is False and done["started_at"] and done["finished_at"]


async def test_async_failure_and_result_endpoints(api: Client) -> None:
    record = await fire(api, "fail", {"message": "async boom"})
    done = await wait(api, record["id"])
    assert done["status"] == "failed" and done["error"]["message"] == "async boom"
    result = await api.get(f"/v1/executions/{record['id']}/result")
    assert result.status == 400
    body = await result.json()
    assert body["message"] == "Rejected" and body["reason"]["message"] == "async boom"
    assert body["error"]["code"] == "rejected"


async def test_poll_then_see_other_then_result(api: Client) -> None:
    record = await fire(api, "sleep", {"seconds": 1})
    pending = await api.get(f"/v1/executions/{record['id']}/poll")
    assert pending.status == 200
    assert (await pending.json())["message"] == "Result is not ready yet"
    await wait(api, record["id"])
    finished = await api.get(f"/v1/executions/{record['id']}/poll", allow_redirects=False)
    assert finished.status == 303
    assert finished.headers["Location"] == f"/v1/executions/{record['id']}/result"
    followed = await api.get(f"/v1/executions/{record['id']}/poll")
    assert followed.status == 200 and await followed.json() == {"data": {"slept": 1.0}}


async def test_wait_returns_the_current_state_when_it_ends(api: Client) -> None:
    record = await fire(api, "sleep", {"seconds": 3})
    started = time.monotonic()
    pending = await wait(api, record["id"], seconds=0.3)
    assert pending["status"] in ("queued", "running")
    assert time.monotonic() - started < 2.5
    assert (await wait(api, record["id"]))["status"] == "success"


async def test_results_expire_then_records_remain(api: Client) -> None:
    record = await run(api, "echo", "keep me")
    await asyncio.sleep(0.6)
    expired, _ = await api.server.app[SERVICES].janitor.sweep()
    assert expired >= 1
    result = await api.get(f"/v1/executions/{record['id']}/result")
    assert result.status == 404 and (await result.json())["message"] == "Expired"
    kept = await (await api.get(f"/v1/executions/{record['id']}")).json()
    assert kept["expired"] is True and kept["result"] is None and kept["status"] == "success"
    assert await (await api.get(f"/v1/executions/{record['id']}/log")).text() == ""


async def test_cancel_while_queued(api: Client) -> None:
    blocker = await fire(api, "sleep", {"seconds": 2})  # one worker: the next one waits
    queued = await fire(api, "echo", "never")
    response = await api.post(f"/v1/executions/{queued['id']}/cancel")
    assert response.status == 200, await response.text()
    cancelled = await response.json()
    assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None
    assert (cancelled["status_reason"], cancelled["error"]) == ("cancelled", None)
    assert (await wait(api, blocker["id"]))["status"] == "success"
    await asyncio.sleep(0.2)
    again = await (await api.get(f"/v1/executions/{queued['id']}")).json()
    assert again["status"] == "cancelled" and again["result"] is None
    await expect_error(await api.post(f"/v1/executions/{queued['id']}/cancel"), 409, "conflict")


async def test_cancel_while_running_kill_and_graceful(api: Client) -> None:
    record = await fire(api, "sleep", {"seconds": 30})
    for _ in range(200):
        if (await (await api.get(f"/v1/executions/{record['id']}")).json())["status"] == "running":
            break
        await asyncio.sleep(0.05)
    started = time.monotonic()
    response = await api.post(f"/v1/executions/{record['id']}/cancel", json={"kill": True})
    assert response.status == 200
    killed = await response.json()
    # A cancellation is how it ended, not an error: the same record as a queued one cancelled.
    assert (killed["status"], killed["status_reason"], killed["error"]) == (
        "cancelled",
        "cancelled",
        None,
    )
    assert time.monotonic() - started < 5
    # Without kill, a short execution may finish within the grace period.
    quick = await fire(api, "sleep", {"seconds": 0.5})
    for _ in range(200):
        if (await (await api.get(f"/v1/executions/{quick['id']}")).json())["status"] == "running":
            break
        await asyncio.sleep(0.02)
    response = await api.post(f"/v1/executions/{quick['id']}/cancel")
    assert (await response.json())["status"] == "success"
    # The worker is free again.
    assert (await wait(api, (await fire(api, "echo", 1))["id"]))["status"] == "success"


async def test_every_end_keeps_the_container_it_ran_in(api: Client) -> None:
    first = await run(api, "echo", 1)
    container = first["container_id"]
    assert isinstance(container, str) and container
    assert (await run(api, "echo", 2))["container_id"] == container  # warm: the same one
    failed = await run(api, "fail", "no")
    assert failed["status"] == "failed" and failed["container_id"] not in (None, container)
    await create(api, "slow", "sleep", timeout="1")
    timed_out = await run(api, "slow", {"seconds": 60})
    assert timed_out["status_reason"] == "timeout" and timed_out["container_id"]

    await create(api, "ticker", "ticker")
    running = await fire(api, "ticker", {"ticks": 600, "interval": 0.1})
    followed = await api.get(f"/v1/executions/{running['id']}/log?follow=true")
    assert await followed.content.readline() == b"tick 1 of 600\n"  # its code runs
    followed.close()
    # One worker: this one waits, and never reaches a container.
    queued = await fire(api, "echo", "never")
    assert queued["container_id"] is None
    cancelled = await (await api.post(f"/v1/executions/{queued['id']}/cancel")).json()
    assert (cancelled["status"], cancelled["container_id"]) == ("cancelled", None)
    response = await api.post(f"/v1/executions/{running['id']}/cancel", json={"kill": True})
    killed = await response.json()
    assert killed["status"] == "cancelled" and killed["container_id"]
    ids = {container, failed["container_id"], timed_out["container_id"], killed["container_id"]}
    assert len(ids) == 4  # a container per function, and a killed one is never reused


async def test_idempotent_create_with_a_client_id(api: Client) -> None:
    client_id = str(uuid.uuid4())
    first = await api.post(
        "/v1/executions", json={"id": client_id, "function_id": "echo", "input": 1}
    )
    assert first.status == 201
    again = await api.post(
        "/v1/executions", json={"id": client_id, "function_id": "echo", "input": 1}
    )
    assert again.status == 200
    assert (await again.json())["id"] == client_id
    listed = await (
        await api.get("/v1/executions?function_id=" + (await first.json())["function_id"])
    ).json()
    assert [e["id"] for e in listed["executions"]] == [client_id]
    other = await api.post(
        "/v1/executions", json={"id": client_id, "function_id": "echo", "input": 2}
    )
    await expect_error(other, 409, "conflict")
    await expect_error(
        await api.post("/v1/executions", json={"id": "not-a-uuid", "function_id": "echo"}),
        400,
        "validation_error",
    )


async def test_a_retry_of_a_running_sync_call_answers_with_its_end(api: Client) -> None:
    body = {"id": str(uuid.uuid4()), "function_id": "sleep", "input": {"seconds": 1}}
    first = asyncio.create_task(api.post("/v1/executions", json=body))
    await asyncio.sleep(0.4)  # the first is running now
    again = await api.post("/v1/executions", json=body)
    assert again.status == 200
    retried = await again.json()
    assert (retried["id"], retried["status"], retried["result"]) == (
        body["id"],
        "success",
        {"slept": 1.0},
    )
    assert (await first).status == 201


async def test_rerun_from_a_source_execution(api: Client) -> None:
    source = await run(api, "echo", {"again": True})
    response = await api.post(
        "/v1/executions", json={"source_execution_id": source["id"], "sync": False}
    )
    assert response.status == 202
    rerun = await wait(api, (await response.json())["id"])
    assert rerun["id"] != source["id"]
    assert rerun["function_id"] == source["function_id"]
    assert rerun["input"] == {"again": True} and rerun["result"] == {"again": True}


async def test_invoke_async(api: Client) -> None:
    response = await api.post("/v1/functions/echo/invoke?async=true", json=[1, 2])
    assert response.status == 202
    execution_id = response.headers["X-Spinlet-Execution-Id"]
    assert response.headers["Location"] == f"/v1/executions/{execution_id}"
    assert (await wait(api, execution_id))["result"] == [1, 2]


async def test_delete_running_is_a_conflict_and_purge(api: Client) -> None:
    record = await fire(api, "sleep", {"seconds": 1})
    await expect_error(await api.delete(f"/v1/executions/{record['id']}"), 409, "conflict")
    await wait(api, record["id"])
    for i in range(4):
        await run(api, "echo", i)
    response = await api.delete("/v1/executions?keep_last=2")
    assert response.status == 200 and (await response.json())["deleted"] == 3
    left = (await (await api.get("/v1/executions")).json())["executions"]
    assert [e["input"] for e in left] == [3, 2]
    response = await api.delete("/v1/executions?to_datetime=2999-01-01T00:00:00Z")
    assert (await response.json())["deleted"] == 2
    await expect_error(await api.delete("/v1/executions"), 400, "validation_error")


async def test_list_filters_sorting_and_paging(api: Client) -> None:
    ids = [
        (
            await run(
                api,
                "echo",
                i,
            )
        )["id"]
        for i in range(5)
    ]
    bad = await run(api, "fail")
    listed = await (await api.get("/v1/executions?status=in:failed,error")).json()
    assert [e["id"] for e in listed["executions"]] == [bad["id"]]
    listed = await (await api.get("/v1/executions?status=neq:failed&sort_dirs=asc")).json()
    assert [e["id"] for e in listed["executions"]] == ids
    page = await (await api.get("/v1/executions?status=success&limit=2&sort_dirs=asc")).json()
    seen = [e["id"] for e in page["executions"]]
    while page["next"]:
        assert "status=success" in page["next"] and page["next"].startswith("http")
        page = await (await api.get(URL(page["next"]).path_qs)).json()
        seen += [e["id"] for e in page["executions"]]
    assert seen == ids
    old = await (await api.get("/v1/executions?created_at=lt:2000-01-01T00:00:00")).json()
    assert old["executions"] == []
    running = await (await api.get("/v1/executions?include_completed=false")).json()
    assert running["executions"] == []
    await api.post("/v1/executions", json={"function_id": "echo", "description": "nightly job"})
    has = await (await api.get("/v1/executions?description=has:night")).json()
    assert [e["description"] for e in has["executions"]] == ["nightly job"]
    for bad_query in ("status=bogus", "sort_keys=input", "created_at=gt:yesterday", "limit=0"):
        await expect_error(await api.get(f"/v1/executions?{bad_query}"), 400, "validation_error")
