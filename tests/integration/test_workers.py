"""A function's workers, and its provisioned containers (Qinling's scale_up, scale_down, detach):
the containers scale_up starts serve the next calls warm and outlive the keep-alive; scale_down
and detach release them; the list shows what each node published with its heartbeat.

Each test runs with functions as local processes and in real Docker containers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.api.keys import SERVICES
from spinlet.domain import utcnow
from spinlet.settings import Settings
from tests.helpers import eventually
from tests.integration.conftest import ApiFactory
from tests.integration.test_api import create, expect_error, run

Client = TestClient[Any, Any]

#: Idle containers go after this long; a short heartbeat so the others see this node soon.
QUICK = {"keep_alive": 0.5, "heartbeat_interval": 0.2, "node_lease": 5.0, "stem_cells": 0}


async def workers(api: Client, function: str) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/functions/{function}/workers")
    assert response.status == 200, await response.text()
    found: list[dict[str, Any]] = (await response.json())["workers"]
    return found


async def scale(api: Client, function: str, action: str, **body: Any) -> dict[str, Any]:
    response = await api.post(f"/v1/functions/{function}/{action}", json=body or None)
    assert response.status == 202, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def gone(request: pytest.FixtureRequest, names: list[str]) -> Callable[[], bool]:
    """Whether none of the named containers exists any more (Docker's view; on the process
    backend, the list of workers is the only view)."""
    if "docker" not in request.node.callspec.id:
        return lambda: True
    docker = request.getfixturevalue("docker_client")
    return lambda: not any(docker.containers.list(all=True, filters={"name": n}) for n in names)


async def test_scale_up_starts_containers_that_serve_the_next_calls_warm(
    api_factory: ApiFactory, request: pytest.FixtureRequest, settings: Settings
) -> None:
    api = await api_factory(**QUICK)
    function = (await create(api, "kept"))["id"]
    other = (await create(api, "passing", "echo"))["id"]

    scaled = await scale(api, function, "scale_up", count=2)
    assert (scaled["count"], scaled["workers"]) == (2, 2)
    kept = await workers(api, function)
    assert len(kept) == 2
    for worker in kept:
        assert worker["worker_name"]
        assert (worker["function_id"], worker["function_version"]) == (function, 0)
        assert (worker["node_id"], worker["state"], worker["provisioned"]) == (
            settings.node_id,
            "idle",
            True,
        )

    # An ordinary warm container is reaped after the keep-alive; the provisioned ones stay.
    assert (await run(api, other, {"x": 1}))["status"] == "success"

    async def reaped() -> bool:
        return await workers(api, other) == []

    await eventually(reaped, within=30)
    assert {w["worker_name"] for w in await workers(api, function)} == {
        w["worker_name"] for w in kept
    }
    for _ in range(3):
        assert (await run(api, function))["start_kind"] == "warm"

    # scale_down releases one, detach the rest: gone from the list and from the engine.
    assert (await scale(api, function, "scale_down"))["count"] == 1
    left = await workers(api, function)
    assert len(left) == 1
    released = [w["worker_name"] for w in kept if w["worker_name"] != left[0]["worker_name"]]
    detached = await scale(api, function, "detach")
    assert (detached["count"], detached["workers"]) == (0, 0)

    async def released_all() -> bool:
        return await workers(api, function) == []

    await eventually(released_all, within=30)
    await eventually(_sync(gone(request, [*released, left[0]["worker_name"]])), within=30)


def _sync(check: Callable[[], bool]) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped


async def test_scale_requests_are_checked(api_factory: ApiFactory) -> None:
    api = await api_factory(**QUICK)
    function = (await create(api, "checked"))["id"]
    for body in ({"count": 0}, {"count": -1}, {"count": "many"}, {"count": 10**6}, {"n": 1}):
        response = await api.post(f"/v1/functions/{function}/scale_up", json=body)
        await expect_error(response, 400, "validation_error")
    response = await api.post("/v1/functions/nope/scale_up", json={"count": 1})
    await expect_error(response, 404, "not_found")
    await expect_error(await api.get("/v1/functions/nope/workers"), 404, "not_found")
    # scaling down below none keeps none
    assert (await scale(api, function, "scale_down", count=3))["count"] == 0


async def test_beyond_the_nodes_room_what_fits_starts_and_the_answer_says_so(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(**QUICK, max_containers=2)
    function = (await create(api, "crowded"))["id"]
    scaled = await scale(api, function, "scale_up", count=3)
    assert (scaled["count"], scaled["workers"]) == (3, 2)
    assert "2 of this node's 3 started" in scaled["message"]
    assert len(await workers(api, function)) == 2
    await scale(api, function, "detach")


async def test_new_code_replaces_the_provisioned_containers(api_factory: ApiFactory) -> None:
    api = await api_factory(**QUICK)
    function = (await create(api, "changing"))["id"]
    await scale(api, function, "scale_up", count=1)
    before = await workers(api, function)
    response = await api.put(f"/v1/functions/{function}", json={"environment": {"A": "1"}})
    assert response.status == 200, await response.text()

    async def replaced() -> bool:
        now = await workers(api, function)
        fresh = [w for w in now if w["worker_name"] != before[0]["worker_name"]]
        return len(now) == 1 and fresh[0]["state"] == "idle" if fresh else False

    await eventually(replaced, within=30)  # on the node's next heartbeat
    assert (await run(api, function))["start_kind"] == "warm"
    await scale(api, function, "detach")


@pytest.fixture
async def two_nodes(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> AsyncIterator[tuple[Client, Client]]:
    """Two nodes on one store and data directory, functions as local processes."""
    first = await aiohttp_client(create_app(settings.evolve(backend="process", **QUICK)))
    second_settings = settings.evolve(backend="process", node_id=f"{settings.node_id}-2", **QUICK)
    second = await aiohttp_client(create_app(second_settings))
    yield first, second


async def test_the_nodes_split_the_count_and_each_lists_the_fleets_workers(
    two_nodes: tuple[Client, Client], settings: Settings
) -> None:
    first, second = two_nodes
    function = (await create(first, "shared"))["id"]

    # one node's count of 3 across two live nodes: 2 and 1, started by each on its own
    await scale(first, function, "scale_up", count=3)

    async def split() -> bool:
        listed = await workers(second, function)
        by_node = sorted(w["node_id"] for w in listed if w["provisioned"])
        return by_node == sorted([settings.node_id, settings.node_id, f"{settings.node_id}-2"])

    await eventually(split, within=30)

    async def same_view() -> bool:
        names = [[w["worker_name"] for w in await workers(api, function)] for api in two_nodes]
        return names[0] == names[1]

    await eventually(same_view, within=30)
    # What each node published with its heartbeat: its workers, capacity and built runtimes.
    store = first.server.app[SERVICES].store
    report = (await store.nodes.reports(utcnow() - timedelta(seconds=5)))[settings.node_id]
    assert report["capacity"]["max_containers"] == settings.max_containers
    assert report["capacity"]["containers"] >= 2
    assert "python3" in report["runtimes"]
    assert {w["function_id"] for w in report["workers"]} == {function}
    await scale(second, function, "detach")

    async def released() -> bool:
        return await workers(first, function) == [] and await workers(second, function) == []

    await eventually(released, within=30)


async def test_a_deleted_functions_containers_go_on_the_next_heartbeat(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(**QUICK)
    function = (await create(api, "deleted"))["id"]
    assert (await scale(api, function, "scale_up", count=1))["workers"] == 1
    assert (await api.delete(f"/v1/functions/{function}")).status == 204
    backend = api.server.app[SERVICES].backend

    async def released() -> bool:
        return all(c.function_id != function for c in await backend.containers())

    await eventually(released, within=30)
