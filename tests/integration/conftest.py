"""Fixtures for the integration tier (Docker and PostgreSQL ones: `tests/conftest.py`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
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
