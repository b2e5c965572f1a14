"""Releasing with versions and aliases, with functions in real Docker containers."""

from __future__ import annotations

import io
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.settings import Settings
from tests.integration.test_api import form
from tests.integration.test_versions_api import (
    change_code,
    execute,
    log_of,
    make_alias,
    publish,
    put_alias,
    tagged,
)

Client = TestClient[Any, Any]

pytestmark = pytest.mark.docker


@pytest.fixture
def runtime_tag(docker_client: Any, runtime_image_tag: str) -> Iterator[str]:
    """A tag of our own on the runtime image, that a test may rebuild; removed afterwards."""
    tag = f"spinlet-test/runtime:{uuid.uuid4().hex[:10]}"
    docker_client.images.get(runtime_image_tag).tag(tag)
    yield tag
    docker_client.images.remove(tag)


def rebuild(docker_client: Any, tag: str) -> str:
    """A new image under `tag` (the same runtime, one label more); returns its id."""
    dockerfile = f"FROM {tag}\nLABEL spinlet.test.rebuilt={uuid.uuid4().hex}\n"
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True
    )
    return str(image.id)


@pytest.fixture
async def api(
    runtime_tag: str,
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    docker_client: Any,
) -> AsyncIterator[Client]:
    client = await aiohttp_client(create_app(settings.evolve(backend="docker")))
    response = await client.post("/v1/runtimes", json={"name": "rebuildable", "image": runtime_tag})
    assert response.status == 201, await response.text()
    yield client
    await client.close()
    left = docker_client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"spinlet.node={settings.node_id}"}
    )
    assert left == [], "containers left behind"


async def upload(api: Client, name: str, tag: str) -> None:
    response = await api.post(
        "/v1/functions", data=form(name, data=tagged(tag), runtime_id="rebuildable")
    )
    assert response.status == 201, await response.text()


async def test_a_release_in_containers(api: Client, runtime_tag: str, docker_client: Any) -> None:
    """v1, v2, an alias and version 0 each run (and print) their own code, each in their own
    containers; a rebuilt runtime image changes what version 0 runs, not what versions run."""
    old_image = docker_client.images.get(runtime_tag).id
    await upload(api, "shop", "A")
    assert (await publish(api, "shop"))["image_id"] == old_image
    await change_code(api, "shop", "B")
    await publish(api, "shop")
    await change_code(api, "shop", "C")
    await make_alias(api, name="live", function_id="shop", function_version=1)

    v1 = await execute(api, function_id="shop", function_version=1)
    live = await execute(api, function_alias="live")
    v0 = await execute(api, function_id="shop")
    assert [r["result"]["code"] for r in (v1, live, v0)] == ["A", "A", "C"]
    assert await log_of(api, v1) == "A ran as version 1\n"
    assert await log_of(api, live) == "A ran as version 1\n"
    assert await log_of(api, v0) == "C ran as version 0\n"
    assert (live["function_alias"], live["function_version"]) == ("live", 1)
    # The alias ran version 1 in version 1's warm container; version 0 has its own.
    assert live["result"]["host"] == v1["result"]["host"] != v0["result"]["host"]
    assert live["start_kind"] == "warm"
    # The runtime's pool shows both containers: version 1's (on the image id) and version 0's.
    pool = await (await api.get("/v1/runtimes/rebuildable/pool")).json()
    assert pool["capacity"] == {"total": 2, "available": 2}

    new_image = rebuild(docker_client, runtime_tag)
    assert new_image != old_image
    # Version 2 starts now, after the rebuild: on the image it was published with.
    v2 = await execute(api, function_id="shop", function_version=2)
    assert (v2["result"]["code"], v2["image_id"]) == ("B", old_image)
    assert await log_of(api, v2) == "B ran as version 2\n"
    assert len({r["result"]["host"] for r in (v1, v0, v2)}) == 3
    # New code for the function: the next version-0 execution runs it, on the new image.
    await change_code(api, "shop", "D")
    latest = await execute(api, function_id="shop")
    assert (latest["result"]["code"], latest["image_id"]) == ("D", new_image)
    assert latest["result"]["host"] != v0["result"]["host"]
    # The image is part of a version: publishing now makes version 3, on the new image.
    third = await publish(api, "shop")
    assert (third["version_number"], third["image_id"]) == (3, new_image)

    # Re-pointing the alias takes effect on the next execution.
    await put_alias(api, "live", function_version=3)
    moved = await execute(api, function_alias="live")
    assert (moved["result"]["code"], moved["function_version"], moved["image_id"]) == (
        "D",
        3,
        new_image,
    )


async def test_a_canary_in_containers(api: Client) -> None:
    await upload(api, "shop", "A")
    await publish(api, "shop")
    await change_code(api, "shop", "B")
    await publish(api, "shop")
    await make_alias(
        api,
        name="live",
        function_id="shop",
        function_version=1,
        routing={"version": 2, "weight": 0.5},
    )
    total = 200
    ran: Counter[int] = Counter()
    hosts: dict[int, set[str]] = {1: set(), 2: set()}
    for _ in range(total):
        record = await execute(api, function_alias="live")
        version = record["function_version"]
        assert record["result"]["code"] == {1: "A", 2: "B"}[version]
        ran[version] += 1
        hosts[version].add(record["result"]["host"])
    share = ran[2] / total
    print(f"canary weight 0.5 in Docker: {ran[2]} of {total} executions ran version 2")
    # 5 standard deviations of a binomial share (sqrt(0.5 * 0.5 / 200) = 0.035).
    assert abs(share - 0.5) < 0.18
    # One warm container per version served all of it, and none served both.
    assert len(hosts[1]) == len(hosts[2]) == 1 and hosts[1] != hosts[2]


async def test_the_image_of_a_version_is_kept_until_no_version_uses_it(
    api: Client, runtime_tag: str, docker_client: Any
) -> None:
    """After a rebuild the old image is tagged by nothing of the user's: a tag of Spinlet's own
    keeps it (not dangling, so `docker image prune` spares it) while a version runs on it."""
    old_image = rebuild(docker_client, runtime_tag)  # an image whose only tag is runtime_tag
    await upload(api, "keeper", "A")
    version = await publish(api, "keeper")
    assert version["image_id"] == old_image
    kept = f"spinlet/kept:{old_image.removeprefix('sha256:')[:12]}"
    rebuild(docker_client, runtime_tag)
    image = docker_client.images.get(old_image)
    assert image.tags == [kept]
    record = await execute(api, function_id="keeper", function_version=1)
    assert (record["result"]["code"], record["image_id"]) == ("A", old_image)
    await change_code(api, "keeper", "B")
    assert (await api.delete("/v1/functions/keeper/versions/1")).status == 204
    # No version uses it any more: Spinlet lets go of it (its warm container aside).
    tags = docker_client.images.get(old_image).tags if _present(docker_client, old_image) else []
    assert kept not in tags


def _present(docker_client: Any, image_id: str) -> bool:
    import docker

    try:
        docker_client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return False
    return True
