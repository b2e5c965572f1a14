"""Fixtures for the integration tier (Docker and PostgreSQL ones: `tests/conftest.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.settings import Settings


@pytest.fixture
async def process_api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    settings: Settings,
) -> TestClient[Any, Any]:
    """The API with functions running as local processes (fast, no Docker)."""
    from spinlet.api.app import create_app

    return await aiohttp_client(create_app(settings.evolve(backend="process")))


#: Makes the API on the backend of the test's parameter, with settings changed as given.
ApiFactory = Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]]


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def api_factory(
    request: pytest.FixtureRequest,
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    settings: Settings,
) -> ApiFactory:
    """Tests that take this run twice: functions in local processes and in Docker."""
    from spinlet.api.app import create_app

    if request.param == "docker":
        request.getfixturevalue("docker_client")

    async def make(**changes: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(settings.evolve(backend=request.param, **changes)))

    return make


@pytest.fixture
async def docker_api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    settings: Settings,
    docker_client: Any,
    runtime_image_tag: str,
) -> AsyncIterator[TestClient[Any, Any]]:
    """The API on Docker, which can tell whether an image exists (the process backend
    accepts any image name, so a missing image cannot be seen there); no container of its
    node may be left once it closes."""
    from spinlet.api.app import create_app

    client = await aiohttp_client(create_app(settings.evolve(backend="docker", stem_cells=0)))
    yield client
    await client.close()
    left = docker_client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"spinlet.node={settings.node_id}"}
    )
    assert left == [], "containers left behind"
