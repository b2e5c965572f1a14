"""A SQLite file another process keeps locked: the store answers `StoreUnavailable` (a 503 with
Retry-After, as for a PostgreSQL outage), never a raw "database is locked"."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.domain import DEFAULT_PROJECT, Execution
from spinlet.errors import StoreUnavailable
from spinlet.settings import Settings
from spinlet.store import Store, database
from tests.helpers import make_package


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "spinlet.db"


@pytest.fixture(autouse=True)
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 50)  # not 10 s per attempt


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(f"sqlite+aiosqlite:///{db_path}")
    await store.projects.ensure(DEFAULT_PROJECT, "default")
    yield store
    await store.close()


@contextmanager
def held(path: Path) -> Iterator[None]:
    """The file write-locked by another connection, as another process would."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def execution() -> Execution:
    return Execution(id=str(uuid.uuid4()), function_id="f", function_name="f")


async def test_a_write_to_a_locked_file_is_store_unavailable(store: Store, db_path: Path) -> None:
    first = execution()
    with held(db_path), pytest.raises(StoreUnavailable) as raised:
        await store.executions.create(first)
    assert raised.value.status == 503
    assert raised.value.details == {"retry_after": 1}
    assert "locked" in raised.value.message
    await store.executions.create(first)  # the same write works once the file is free
    assert await store.executions.find(DEFAULT_PROJECT, first.id) is not None


async def test_writes_committed_together_all_fail_and_none_is_kept(
    store: Store, db_path: Path
) -> None:
    batch = [execution() for _ in range(3)]
    with held(db_path):
        outcomes = await asyncio.gather(
            *(store.executions.create(e) for e in batch), return_exceptions=True
        )
    assert [type(outcome) for outcome in outcomes] == [StoreUnavailable] * 3
    assert [await store.executions.find(DEFAULT_PROJECT, e.id) for e in batch] == [None] * 3


async def test_a_pooled_transaction_on_a_locked_file_is_store_unavailable(
    store: Store, db_path: Path
) -> None:
    with held(db_path), pytest.raises(StoreUnavailable):
        await store.projects.ensure("other", "other")
    await store.projects.ensure("other", "other")


async def test_the_api_answers_503_with_retry_after_while_the_file_is_locked(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    settings: Settings,
    db_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{db_path}"
    api = await aiohttp_client(create_app(settings.evolve(backend="process", database_url=url)))
    upload = aiohttp.FormData({"name": "echo"})
    upload.add_field(
        "package", make_package("def main(event):\n    return event\n"), filename="echo.zip"
    )
    created = await api.post("/v1/functions", data=upload)
    assert created.status == 201, await created.text()
    body = {"function_id": "echo", "sync": False}
    with held(db_path):
        response = await api.post("/v1/executions", json=body)
        assert response.status == 503, await response.text()
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["code"] == "store_unavailable"
    assert (await api.post("/v1/executions", json=body)).status == 202
