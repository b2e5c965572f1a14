"""Cron jobs and scheduled executions through the API, on a real node (functions in local
processes): they fire once, at their time or after it, and bad ones are 400s."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.settings import Settings
from tests.helpers import eventually
from tests.integration.test_api import create, expect_error

Client = TestClient[Any, Any]
MakeClient = Callable[..., Coroutine[Any, Any, Client]]


@pytest.fixture
async def api(process_api: Client) -> Client:
    await create(process_api, "echo", "echo")
    return process_api


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def get(api: Client, path: str) -> Any:
    response = await api.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def job_executions(api: Client, job_id: str) -> list[dict[str, Any]]:
    page = await get(api, f"/v1/executions?job_id={job_id}&include_output=true")
    executions: list[dict[str, Any]] = page["executions"]
    return executions


async def test_a_run_once_job_fires_once_on_time(api: Client) -> None:
    response = await api.post(
        "/v1/jobs",
        json={
            "name": "once",
            "function_id": "echo",
            "pattern": "* * * * * *",
            "function_input": '{"from": "job"}',
            "count": 1,
        },
    )
    assert response.status == 201, await response.text()
    job = await response.json()
    assert (job["status"], job["count"], job["timezone"]) == ("running", 1, "UTC")
    tick = datetime.fromisoformat(job["next_execution_time"])

    async def done() -> bool:
        return bool((await get(api, f"/v1/jobs/{job['id']}"))["status"] == "done")

    await eventually(done, within=30)
    [execution] = await job_executions(api, job["id"])
    finished = await get(api, f"/v1/executions/{execution['id']}?wait=60")
    assert (finished["status"], finished["result"]) == ("success", {"from": "job"})
    assert (finished["source"], finished["job_id"], finished["sync"]) == ("job", job["id"], False)
    assert datetime.fromisoformat(finished["created_at"]) >= tick  # never before its tick
    shown = await get(api, f"/v1/jobs/{job['id']}")
    assert (shown["count"], shown["next_execution_time"]) == (0, None)
    assert (shown["last_execution_id"], shown["last_execution_status"]) == (
        execution["id"],
        "success",
    )
    assert [j["id"] for j in (await get(api, "/v1/jobs"))["jobs"]] == [job["id"]]


async def test_a_scheduled_execution_runs_at_its_time(api: Client) -> None:
    schedule = later(2)
    response = await api.post(
        "/v1/executions",
        json={"function_id": "echo", "input": [1], "sync": False, "schedule": schedule},
    )
    assert response.status == 202, await response.text()
    record = await response.json()
    assert record["status"] == "scheduled"
    assert datetime.fromisoformat(record["schedule"]) == datetime.fromisoformat(schedule)
    listed = await get(api, "/v1/executions?status=scheduled")
    assert [e["id"] for e in listed["executions"]] == [record["id"]]

    finished = await get(api, f"/v1/executions/{record['id']}?wait=60")
    assert (finished["status"], finished["result"]) == ("success", [1])
    assert datetime.fromisoformat(finished["started_at"]) >= datetime.fromisoformat(schedule)


async def test_a_scheduled_execution_is_cancelled_before_it_runs(api: Client) -> None:
    body = {"function_id": "echo", "sync": False, "schedule": later(3600)}
    record = await (await api.post("/v1/executions", json=body)).json()
    response = await api.post(f"/v1/executions/{record['id']}/cancel")
    assert response.status == 200, await response.text()
    cancelled = await response.json()
    assert (cancelled["status"], cancelled["started_at"]) == ("cancelled", None)


async def test_a_schedule_within_the_grace_is_queued_at_once(api: Client) -> None:
    body = {"function_id": "echo", "input": 5, "sync": False, "schedule": later(-10)}
    response = await api.post("/v1/executions", json=body)
    assert response.status == 202, await response.text()
    assert (await response.json())["status"] == "queued"


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/executions", {"sync": False, "schedule": "2001-01-01T00:00:00Z"}, "has passed"),
        ("/v1/executions", {"sync": True, "schedule": "2999-01-01T00:00:00Z"}, "sync"),
        ("/v1/executions", {"sync": False, "schedule": "tomorrow"}, "schedule"),
        ("/v1/jobs", {"pattern": "61 * * * *"}, "not a cron pattern"),
        ("/v1/jobs", {"pattern": "* * * * *", "timezone": "Nowhere/Land"}, "timezone"),
        ("/v1/jobs", {"pattern": "* * * * *", "count": 0}, "count"),
        ("/v1/jobs", {"pattern": "* * * * *", "status": "paused"}, "read-only"),
        ("/v1/jobs", {"pattern": "* * * * *", "every": 5}, "every"),
        ("/v1/jobs", {}, "pattern"),
        ("/v1/jobs", {"first_execution_time": "2001-01-01T00:00:00"}, "has passed"),
    ],
)
async def test_bad_triggers_are_400s(
    api: Client, path: str, body: dict[str, Any], words: str
) -> None:
    key = "function_id"
    response = await api.post(path, json={key: "echo", **body})
    assert words in await expect_error(response, 400, "validation_error")


async def test_a_job_is_paused_resumed_and_deleted_as_the_qinling_client_sends_it(
    api: Client,
) -> None:
    job = await (
        await api.post("/v1/jobs", json={"function_id": "echo", "pattern": "0 0 1 1 *"})
    ).json()
    nulls = {"name": None, "pattern": None, "next_execution_time": None, "function_input": None}
    response = await api.put(f"/v1/jobs/{job['id']}", json={**nulls, "status": "paused"})
    assert response.status == 200, await response.text()
    paused = await response.json()
    assert paused["status"] == "paused"
    assert (paused["pattern"], paused["next_execution_time"]) == (
        job["pattern"],
        job["next_execution_time"],
    )
    resumed = await (
        await api.put(f"/v1/jobs/{job['id']}", json={**nulls, "status": "running"})
    ).json()
    assert resumed["status"] == "running"
    soon = later(3600)
    retimed = await (
        await api.put(f"/v1/jobs/{job['id']}", json={**nulls, "next_execution_time": soon})
    ).json()
    assert datetime.fromisoformat(retimed["next_execution_time"]) == datetime.fromisoformat(soon)
    response = await api.put(f"/v1/jobs/{job['id']}", json={"status": "done"})
    await expect_error(response, 400, "validation_error")
    cancelled = await (await api.put(f"/v1/jobs/{job['id']}", json={"status": "cancelled"})).json()
    assert cancelled["status"] == "cancelled"
    response = await api.put(f"/v1/jobs/{job['id']}", json={"status": "running"})
    await expect_error(response, 409, "conflict")
    assert (await api.delete(f"/v1/jobs/{job['id']}")).status == 204
    await expect_error(await api.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    await expect_error(await api.delete(f"/v1/jobs/{job['id']}"), 404, "not_found")


async def test_jobs_and_scheduled_executions_survive_a_restart(
    aiohttp_client: MakeClient, settings: Settings
) -> None:
    from spinlet.api.app import create_app

    node = settings.evolve(backend="process")
    first = await aiohttp_client(create_app(node))
    await create(first, "echo", "echo")
    body = {"function_id": "echo", "input": "later", "sync": False, "schedule": later(3)}
    record = await (await first.post("/v1/executions", json=body)).json()
    job_body = {"function_id": "echo", "first_execution_time": later(3), "function_input": 2}
    job = await (await first.post("/v1/jobs", json=job_body)).json()
    await first.close()

    second = await aiohttp_client(create_app(node))
    finished = await get(second, f"/v1/executions/{record['id']}?wait=60")
    assert (finished["status"], finished["result"]) == ("success", "later")

    async def done() -> bool:
        return bool((await get(second, f"/v1/jobs/{job['id']}"))["status"] == "done")

    await eventually(done, within=60)
    [fired] = await job_executions(second, job["id"])
    assert (await get(second, f"/v1/executions/{fired['id']}?wait=60"))["result"] == 2
