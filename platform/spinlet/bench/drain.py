"""Async throughput: how fast executions are accepted, and how long a backlog takes to drain.

Runs against a server (its URL), with a trivial function it creates for the purpose.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import httpx

from spinlet.paths import project_root


@dataclass(frozen=True)
class DrainResult:
    count: int
    clients: int
    enqueue_seconds: float
    drain_seconds: float  # from the first request to the last execution finished
    statuses: dict[str, int]

    @property
    def summary(self) -> dict[str, object]:
        return {
            "executions": self.count,
            "clients": self.clients,
            "enqueue_per_s": round(self.count / self.enqueue_seconds),
            "drain_s": round(self.drain_seconds, 1),
            "drained_per_s": round(self.count / self.drain_seconds),
            "statuses": self.statuses,
        }


async def run(url: str, count: int, clients: int = 16) -> DrainResult:
    name = f"bench-echo-{uuid.uuid4().hex[:6]}"
    source = (project_root() / "functions" / "echo.py").read_bytes()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        response = await http.post(
            "/v1/functions", data={"name": name}, files={"package": ("echo.py", source)}
        )
        response.raise_for_status()
        function_id = response.json()["id"]
        ids: list[str] = []
        queue = iter(range(count))

        async def enqueue() -> None:
            for i in queue:
                body = {"function_id": function_id, "input": i, "sync": False}
                reply = await http.post("/v1/executions", json=body)
                reply.raise_for_status()
                ids.append(reply.json()["id"])

        started = time.perf_counter()
        await asyncio.gather(*(enqueue() for _ in range(clients)))
        enqueued = time.perf_counter() - started
        while True:
            pending = await http.get(
                "/v1/executions",
                params={"function_id": function_id, "include_completed": "false", "limit": 1},
            )
            if not pending.json()["executions"]:
                break
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - started
        statuses: dict[str, int] = {}
        for status in ("success", "failed", "error", "cancelled"):
            statuses[status] = await _count(http, function_id, status)
        await http.delete(f"/v1/functions/{function_id}")
    return DrainResult(count, clients, enqueued, drained, statuses)


async def _count(http: httpx.AsyncClient, function_id: str, status: str) -> int:
    """How many executions of the function have this status (following the `next` links)."""
    counted = 0
    page: str | None = "/v1/executions"
    params: dict[str, str | int] | None = {
        "function_id": function_id,
        "status": status,
        "limit": 1000,
    }
    while page:
        body = (await http.get(page, params=params)).json()
        counted += len(body["executions"])
        page, params = body.get("next"), None  # the link keeps the filters
    return counted
