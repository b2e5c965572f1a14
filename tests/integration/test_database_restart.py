"""A restart of PostgreSQL under a running node: what ran through it is recorded once the
database is back, requests meanwhile get a clear 503, and the nodes hear each other again,
all without restarting the node."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.settings import Settings
from spinlet.store.notify import FINISHED, QUEUED, Notifier
from tests.conftest import FUNCTIONS
from tests.helpers import MARKING, database_outage, eventually

pytestmark = pytest.mark.postgres


class Heard:
    def __init__(self) -> None:
        self.queued = 0
        self.finished: list[str] = []

    def on_queued(self) -> None:
        self.queued += 1

    def on_finished(self, execution_id: str) -> None:
        self.finished.append(execution_id)


async def test_announcements_flow_again_after_the_connections_drop(fresh_postgres: str) -> None:
    sender, listener = Notifier(fresh_postgres), Notifier(fresh_postgres)
    heard = Heard()
    await sender.start(lambda: None, lambda _id: None)
    await listener.start(heard.on_queued, heard.on_finished)
    try:
        await sender.send(FINISHED, "before")

        async def heard_before() -> bool:
            return heard.finished == ["before"]

        await eventually(heard_before, within=5)

        # Two listening, one sending; the listener tries again, refused, while it is down.
        assert await database_outage(fresh_postgres, 1.0) == 3
        assert not listener.listening

        async def listening_again() -> bool:
            # Once listening again, the node looks for work queued while it heard nothing.
            return heard.queued == 1 and listener.listening

        await eventually(listening_again, within=10)

        await sender.send(FINISHED, "after")  # its sending connection dropped too
        await sender.send(QUEUED)

        async def heard_after() -> bool:
            return heard.finished == ["before", "after"] and heard.queued == 2

        await eventually(heard_after, within=5)
    finally:
        await sender.stop()
        await listener.stop()


async def test_an_execution_that_ends_during_an_outage_is_recorded_after_it(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    fresh_postgres: str,
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", node_id="outage", database_url=fresh_postgres, backend="process"
    )
    api = await aiohttp_client(create_app(settings))
    form = aiohttp.FormData()
    form.add_field("name", "sleep")
    form.add_field("package", (FUNCTIONS / "sleep.py").read_bytes(), filename="sleep.py")
    assert (await api.post("/v1/functions", data=form)).status == 201

    body = {"function_id": "sleep", "input": {"seconds": 1.5}}
    call = asyncio.create_task(api.post("/v1/executions", json=body))

    async def running() -> bool:
        listing = await api.get("/v1/executions", params={"status": "running"})
        return len((await listing.json())["executions"]) == 1

    await eventually(running, within=10)
    outage = asyncio.create_task(database_outage(fresh_postgres, 3.0))  # it ends meanwhile
    await asyncio.sleep(0.5)

    during = await api.get("/v1/functions")
    assert during.status == 503, await during.text()
    assert (await during.json())["error"]["code"] == "store_unavailable"
    assert during.headers["Retry-After"] == "1"
    assert (await api.get("/ready")).status == 503  # a load balancer sends work elsewhere
    assert (await api.get("/health")).status == 200

    await outage
    answer = await call
    assert answer.status == 201, await answer.text()
    execution = await answer.json()
    assert (execution["status"], execution["result"]) == ("success", {"slept": 1.5})
    stored = await (await api.get(f"/v1/executions/{execution['id']}")).json()
    assert (stored["status"], stored["result"]) == ("success", {"slept": 1.5})
    assert (await api.get("/ready")).status == 200


async def test_after_an_outage_longer_than_the_lease_no_live_node_is_taken_for_dead(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    fresh_postgres: str,
    tmp_path: Path,
) -> None:
    # While the database is away no node can beat. Once it is back, a node that took the
    # others' old heartbeats for silence would recover (here: run again) what they still run.
    nodes = [
        await aiohttp_client(
            create_app(
                Settings(
                    data_dir=tmp_path / name,
                    node_id=name,
                    database_url=fresh_postgres,
                    backend="process",
                    stem_cells=0,
                    heartbeat_interval=0.2,
                    node_lease=1.0,
                )
            )
        )
        for name in ("node-a", "node-b")
    ]
    form = aiohttp.FormData({"name": "marking", "retries": "1"})
    form.add_field("package", MARKING.encode(), filename="marking.py")
    assert (await nodes[0].post("/v1/functions", data=form)).status == 201
    marks = tmp_path / "marks.txt"
    body = {"function_id": "marking", "sync": False, "input": {"marks": str(marks), "seconds": 4}}
    accepted = await nodes[0].post("/v1/executions", json=body)
    assert accepted.status == 202, await accepted.text()
    execution_id = (await accepted.json())["id"]

    async def started() -> bool:
        return marks.exists() and marks.read_text() != ""

    await eventually(started, within=10)
    await database_outage(fresh_postgres, 2.0)  # twice the lease

    final = await nodes[1].get(f"/v1/executions/{execution_id}", params={"wait": 30})
    record = await final.json()
    assert (record["status"], record["result"]) == ("success", "done"), record
    assert marks.read_text().split() == [execution_id], "it ran twice"
