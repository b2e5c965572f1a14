"""A function's `concurrency`: executions beyond it wait in line, then get a `429` (sync) or stay
queued (async); the containers it gets are capped by it. On both backends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import eventually
from tests.integration.conftest import ApiFactory
from tests.integration.test_api import create, expect_error
from tests.integration.test_async_api import fire, wait
from tests.integration.test_executions_queries import kill
from tests.integration.test_metrics import scrape

Client = TestClient[Any, Any]


@pytest.fixture
async def api(api_factory: ApiFactory) -> Client:
    client = await api_factory(workers=4, stem_cells=0, concurrency_queue=1, concurrency_wait=30)
    await create(client, "sleep", "sleep", concurrency="1")
    return client


async def sync_run(api: Client, seconds: float) -> Any:
    return await api.post(
        "/v1/executions", json={"function_id": "sleep", "input": {"seconds": seconds}}
    )


async def executions(api: Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = (await (await api.get("/v1/executions")).json())["executions"]
    return listed


async def test_beyond_the_limit_one_waits_in_line_and_the_next_gets_429(api: Client) -> None:
    function = await (await api.get("/v1/functions/sleep")).json()
    assert function["concurrency"] == 1
    first = asyncio.create_task(sync_run(api, 1.5))
    await asyncio.sleep(0.5)
    second = asyncio.create_task(sync_run(api, 0.1))  # waits in the line of one
    await asyncio.sleep(0.2)
    refused = await sync_run(api, 0.1)
    message = await expect_error(refused, 429, "concurrency_limit")
    assert "limit of 1" in message
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"]["retry_after"] == 1
    assert (await scrape(api))[("spinlet_executions_rejected_total", ())] == 1
    responses = await asyncio.gather(first, second)
    assert [r.status for r in responses] == [201, 201]
    records = [await r.json() for r in responses]
    assert all(r["status"] == "success" for r in records)
    # The one in line started when the first ended; the refused one left no record.
    assert records[1]["started_at"] >= records[0]["finished_at"]
    assert len(await executions(api)) == 2
    # One container served both: the limit caps the containers of the function too.
    pool = await (await api.get("/v1/runtimes/python3/pool")).json()
    assert pool["capacity"]["total"] == 1


async def occupy(api: Client) -> tuple[str, asyncio.Task[Any]]:
    """A sync execution of `sleep` that holds the function's one slot until it is killed."""
    busy_id = str(uuid.uuid4())
    busy = asyncio.create_task(
        api.post(
            "/v1/executions",
            json={"id": busy_id, "function_id": "sleep", "input": {"seconds": 50}},
        )
    )

    async def running() -> bool:  # a sync execution's row is written as it starts
        response = await api.get(f"/v1/executions/{busy_id}")
        return response.status == 200 and (await response.json())["status"] == "running"

    await eventually(running, within=30)
    return busy_id, busy


async def release(api: Client, busy_id: str, busy: asyncio.Task[Any]) -> None:
    await kill(api, busy_id)
    assert (await busy).status == 201


async def test_async_executions_stay_queued_while_the_function_is_saturated(
    api: Client,
) -> None:
    busy_id, busy = await occupy(api)
    queued = await fire(api, "sleep", {"seconds": 0.1})
    await asyncio.sleep(0.5)
    record = await (await api.get(f"/v1/executions/{queued['id']}")).json()
    assert record["status"] == "queued"  # 4 workers are free, the function is not
    await release(api, busy_id, busy)
    done = await wait(api, queued["id"])
    assert done["status"] == "success"
    finished = [e for e in await executions(api) if e["sync"]]
    assert done["started_at"] >= finished[0]["finished_at"]


async def test_other_functions_are_not_held_up(api: Client) -> None:
    await create(api, "echo", "echo")
    busy_id, busy = await occupy(api)
    blocked = await fire(api, "sleep", {"seconds": 0.1})
    other = await fire(api, "echo", {"n": 1})
    done = await wait(api, other["id"], seconds=20)
    assert done["status"] == "success"
    assert (await (await api.get(f"/v1/executions/{blocked['id']}")).json())["status"] == "queued"
    await release(api, busy_id, busy)
    assert (await wait(api, blocked["id"]))["status"] == "success"


async def test_concurrency_is_validated_and_updated(api: Client) -> None:
    response = await api.put("/v1/functions/sleep", json={"concurrency": 0})
    await expect_error(response, 400, "validation_error")
    response = await api.put("/v1/functions/sleep", json={"concurrency": 3, "timeout": None})
    assert response.status == 200, await response.text()
    assert (await response.json())["concurrency"] == 3
