"""A node keeps to its share of PostgreSQL's connections (`SPINLET_DATABASE_POOL`): requests
beyond it wait for a connection instead of opening more, so several nodes fit under the
server's `max_connections`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import make_url

from spinlet.api.app import create_app
from spinlet.settings import Settings

pytestmark = pytest.mark.postgres


async def test_a_node_opens_no_more_connections_than_its_pool(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    fresh_postgres: str,
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        node_id="pooled",
        database_url=fresh_postgres,
        backend="process",
        stem_cells=0,
        database_pool=3,
    )
    api = await aiohttp_client(create_app(settings))
    url = make_url(fresh_postgres)
    admin = await asyncpg.connect(
        url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    )
    seen: list[int] = []
    done = asyncio.Event()

    async def count_connections() -> None:
        while not done.is_set():
            seen.append(
                await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", url.database
                )
            )
            await asyncio.sleep(0.005)

    counting = asyncio.create_task(count_connections())
    try:
        paths = ["/v1/functions", "/v1/executions", "/v1/aliases", "/v1/runtimes"] * 15
        responses = await asyncio.gather(*(api.get(path) for path in paths))
        assert [r.status for r in responses] == [200] * len(paths)
    finally:
        done.set()
        await counting
        await admin.close()
    assert max(seen) <= 3 + 2, seen  # the pool, and the LISTEN and NOTIFY connections
