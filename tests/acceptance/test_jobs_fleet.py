"""Three nodes on one PostgreSQL fire each tick of a per-second cron job once, while one of them
is killed with SIGKILL: no tick fires twice, and every tick that passed is accounted for (fired,
or skipped and counted: see the README's "Cron jobs")."""

from __future__ import annotations

import collections
import signal
import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from spinlet.store.jobs import tick_execution_id
from tests.acceptance.conftest import stop_server
from tests.acceptance.test_nodes import create_marking, start_nodes
from tests.helpers import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]


async def test_three_nodes_fire_each_tick_once_while_one_is_killed(
    tmp_path: Path, fresh_postgres: str
) -> None:
    marks = tmp_path / "marks.txt"
    marks.touch()
    nodes = await start_nodes(tmp_path, fresh_postgres, 3)
    first, killed, last = nodes
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            await create_marking(http, first.url)
            response = await http.post(
                f"{killed.url}/v1/jobs",
                json={
                    "name": "every second",
                    "function_id": "marking",
                    "pattern": "* * * * * *",
                    "function_input": {"marks": str(marks), "seconds": 0},
                },
            )
            assert response.status_code == 201, response.text
            job = response.json()

            async def fired() -> list[dict[str, Any]]:
                response = await http.get(
                    f"{last.url}/v1/executions",
                    params={"job_id": job["id"], "limit": 1000, "include_output": "true"},
                )
                executions: list[dict[str, Any]] = response.json()["executions"]
                return executions

            async def at_least(count: int) -> bool:
                return len(await fired()) >= count

            await eventually(lambda: at_least(5), within=120)
            killed.process.send_signal(signal.SIGKILL)
            killed.process.wait()
            before_kill = len(await fired())
            await eventually(lambda: at_least(before_kill + 8), within=120)

            response = await http.put(f"{first.url}/v1/jobs/{job['id']}", json={"status": "paused"})
            assert response.status_code == 200, response.text
            paused = response.json()
            executions = await fired()
            final = {}
            for execution in executions:
                response = await http.get(
                    f"{first.url}/v1/executions/{execution['id']}", params={"wait": 60}
                )
                final[execution["id"]] = response.json()
    finally:
        for node in nodes:
            stop_server(node)

    first_tick = datetime.fromisoformat(job["next_execution_time"])
    next_tick = datetime.fromisoformat(paused["next_execution_time"])
    passed = [
        first_tick + timedelta(seconds=i)
        for i in range(int((next_tick - first_tick).total_seconds()))
    ]
    tick_of = {tick_execution_id(job["id"], tick): tick for tick in passed}
    ids = [e["id"] for e in executions]
    assert len(set(ids)) == len(ids)
    assert set(ids) <= set(tick_of), "an execution of no tick"
    # Every tick that passed fired once, or was skipped (its previous execution still ran, or it
    # passed while the scheduler was late: the catch-up) and counted.
    assert len(ids) + paused["skipped"] == len(passed), (len(ids), paused["skipped"], len(passed))
    assert all(e["source"] == "job" and e["job_id"] == job["id"] for e in final.values())
    runs = collections.Counter(marks.read_text().split())
    assert max(runs.values()) == 1, "a tick's execution ran twice"
    lags = sorted(
        (datetime.fromisoformat(e["created_at"]) - tick_of[e["id"]]).total_seconds()
        for e in final.values()
    )
    print(
        f"{len(ids)} ticks fired, {paused['skipped']} skipped, of {len(passed)}; firing lag "
        f"p50 {statistics.median(lags) * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )
