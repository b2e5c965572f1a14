"""Several nodes on one PostgreSQL: the work spreads over them, the work of a node killed with
SIGKILL is recovered by the others within the lease, and nothing runs twice."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Server, start_server, stop_server
from tests.helpers import MARKING, eventually

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

COUNT = 1000
LEASE = 3.0


async def start_nodes(tmp_path: Path, database_url: str, count: int) -> list[Server]:
    env = {
        "SPINLET_DATABASE_URL": database_url,
        "SPINLET_WORKERS": "4",
        "SPINLET_HEARTBEAT_INTERVAL": "0.5",
        "SPINLET_NODE_LEASE": str(LEASE),
        "SPINLET_STEM_CELLS": "0",
    }
    return await asyncio.gather(
        *(
            asyncio.to_thread(
                start_server, tmp_path / f"node-{i}", "process", node_id=f"node-{i}", env=env
            )
            for i in range(count)
        )
    )


async def create_marking(http: httpx.AsyncClient, url: str) -> None:
    """The function `marking` (`tests.helpers.MARKING`), made through the node at `url`."""
    package = {"package": ("marking.py", MARKING.encode())}
    created = await http.post(f"{url}/v1/functions", data={"name": "marking"}, files=package)
    assert created.status_code == 201, created.text


async def test_three_nodes_share_the_work_and_recover_a_killed_one(
    tmp_path: Path, fresh_postgres: str
) -> None:
    marks = tmp_path / "marks.txt"
    marks.touch()
    nodes = await start_nodes(tmp_path, fresh_postgres, 3)
    first, killed, last = nodes
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            await create_marking(http, first.url)
            # A function uploaded to one node runs on any: a sync execution on another.
            sync = await http.post(
                f"{last.url}/v1/executions",
                json={"function_id": "marking", "input": {"marks": str(marks), "seconds": 0}},
            )
            assert sync.status_code == 201, sync.text
            assert (sync.json()["status"], sync.json()["node_id"]) == ("success", last.node_id)

            accepted: list[str] = []

            async def fire(i: int) -> None:
                node = nodes[i % 3]
                body = {
                    "function_id": "marking",
                    "sync": False,
                    "input": {"marks": str(marks), "seconds": 0.3},
                }
                response = await http.post(f"{node.url}/v1/executions", json=body)
                assert response.status_code == 202, response.text
                accepted.append(response.json()["id"])

            for start in range(0, COUNT, 50):
                await asyncio.gather(*(fire(i) for i in range(start, start + 50)))

            # Let some run everywhere, then kill one node in the middle of the work.
            async def some_ran() -> bool:
                return len(marks.read_text().splitlines()) >= 200

            await eventually(some_ran, within=60)
            killed.process.send_signal(signal.SIGKILL)
            killed.process.wait()
            killed_at = time.monotonic()
            ran_before_kill = len(marks.read_text().splitlines())

            async def running_on_killed() -> int:
                response = await http.get(
                    f"{first.url}/v1/executions",
                    params={"include_completed": "false", "status": "running", "limit": 1000},
                )
                return sum(1 for e in response.json()["executions"] if e["node_id"] == "node-1")

            while await running_on_killed():
                assert time.monotonic() - killed_at < LEASE + 10, "not recovered within the lease"
                await asyncio.sleep(0.2)
            recovered_after = time.monotonic() - killed_at

            final: dict[str, dict[str, Any]] = {}
            for execution_id in accepted:
                node = (first, last)[len(final) % 2]
                response = await http.get(
                    f"{node.url}/v1/executions/{execution_id}", params={"wait": 60}
                )
                assert response.status_code == 200, f"acknowledged {execution_id} is gone"
                final[execution_id] = response.json()
    finally:
        for node in nodes:
            stop_server(node)

    assert ran_before_kill < COUNT, "everything ran before the kill; the test proves nothing"
    runs = collections.Counter(marks.read_text().split())
    assert max(runs.values()) == 1, "an execution ran twice"
    statuses = collections.Counter(r["status"] for r in final.values())
    assert statuses["success"] + statuses["error"] == COUNT, statuses
    lost = [r for r in final.values() if r["status"] == "error"]
    # What node-1 was running when it died is lost (retries 0); nothing else is.
    summary = [(r["node_id"], r["status_reason"], r["error"]["message"]) for r in lost]
    assert 1 <= len(lost) <= 4, summary
    assert all((r["status_reason"], r["node_id"]) == ("lost", "node-1") for r in lost), summary
    assert all(runs[i] == 1 for i, r in final.items() if r["status"] == "success")
    ran_on = collections.Counter(r["node_id"] for r in final.values() if r["status"] == "success")
    assert set(ran_on) == {"node-0", "node-1", "node-2"}, ran_on
    print(f"recovered {len(lost)} in {recovered_after:.1f}s; ran on {dict(ran_on)}")
