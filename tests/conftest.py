"""Shared fixtures: real stores (SQLite and PostgreSQL), a real Docker engine, settings."""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from sqlalchemy import make_url

from spinlet.domain import DEFAULT_PROJECT
from spinlet.settings import Settings
from spinlet.store import Store
from tests.runtimes import SHIPPED, Shipped

#: The session's wheelhouse (`wheelhouse`, `offline_pip`) for the tests that install wheels.
pytest_plugins = ["tests.wheels"]

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = REPO / "functions"
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """A missing service: a failure in CI, a skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


#: Where a blocking call on the event loop is allowed, each with its reason: (the end of a
#: file's path, functions of it anywhere on the stack).
LOOP_MAY_BLOCK: list[tuple[str, set[str]]] = [
    # The first import of a module that is imported where it is needed (so that the CLI
    # loads only what a command uses) reads its files, once per process.
    ("<frozen importlib._bootstrap>", {"_find_and_load"}),
    # Making an engine: SQLAlchemy makes a SQLite file's path absolute (a getcwd), once.
    ("sqlalchemy/dialects/sqlite/pysqlite.py", {"create_connect_args"}),
    # asyncpg looks for a password file and client certificates under ~/.postgresql on each
    # new connection (a few stats); the pool keeps its connections, so this is rare.
    ("asyncpg/connect_utils.py", {"_parse_connect_dsn_and_args"}),
    # Migrations run once as a node starts, before it serves: alembic reads its scripts inside
    # SQLAlchemy's `run_sync`, in the loop's thread.
    ("spinlet/store/database.py", {"upgrade"}),
    # The same, where a migration test moves the schema down and up itself.
    ("tests/unit/test_migrations.py", {"step"}),
    # A log spool whose writer thread lags behind a flood of output writes on the loop, so
    # that the flood waits instead of filling the node's memory (`logspool.py`).
    ("spinlet/logspool.py", {"_catch_up"}),
]


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail a test in which Spinlet's code makes a blocking call on the event loop (file or
    socket I/O, a sleep, a lock wait, a SQLite statement): only calls with a frame of the
    `spinlet` package on the stack count, so a test's own setup may block. The acceptance tier
    drives nodes in other processes, where this cannot see."""
    if "acceptance" in request.node.path.parts:
        yield None
        return
    with blockbuster_ctx("spinlet") as buster:
        for function in buster.functions.values():
            for filename, names in LOOP_MAY_BLOCK:
                function.can_block_in(filename, names)
        yield buster


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("SPINLET_TEST_POSTGRES_URL")
    if not url:
        unavailable("SPINLET_TEST_POSTGRES_URL is not set (deploy/ensure-postgres.sh prints one)")
    assert url is not None
    return url


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    parsed = make_url(url)
    conn = await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def fresh_postgres(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test."""
    name = f"spinlet_test_{uuid.uuid4().hex[:12]}"
    try:
        await _admin(postgres_url, f'CREATE DATABASE "{name}"')
    except OSError as exc:
        unavailable(f"PostgreSQL at {postgres_url} is unreachable: {exc}")
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    import asyncpg

    for attempt in range(5):
        try:
            await _admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.PostgresError:  # a backend not ours (autovacuum) held it: again
            await asyncio.sleep(0.2 * (attempt + 1))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs twice: on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'spinlet.db'}"
    url: str = request.getfixturevalue("fresh_postgres")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.open(database_url)
    await store.projects.ensure(DEFAULT_PROJECT, "default")
    yield store
    await store.close()


#: `SPINLET_TEST_STORE=postgres` runs the tests built on `settings` (the API, the services) on a
#: fresh PostgreSQL database each instead of SQLite: tests/run.sh does a pass of them so.
STORE = os.environ.get("SPINLET_TEST_STORE", "sqlite")


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    database_url = request.getfixturevalue("fresh_postgres") if STORE == "postgres" else None
    yield Settings(
        data_dir=tmp_path / "data",
        node_id=f"test-{uuid.uuid4().hex[:8]}",
        database_url=database_url,
    )


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the local Docker engine; skips (fails with CI=true) when it is unreachable."""
    client, problem = _connect_docker()
    if problem is not None:
        unavailable(problem)
    yield client
    client.close()


def _connect_docker() -> tuple[Any, str | None]:
    # docker-py leaks the socket of a failed connect: drop it here, not as a stray
    # ResourceWarning that would fail the whole run (warnings are errors).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env()
            client.ping()
        except Exception as exc:
            problem = f"Docker is not reachable: {exc}"
        else:
            return client, None
        gc.collect()
    return None, problem


@pytest.fixture(scope="session")
def runtime_image_tag(docker_client: Any) -> str:
    """The runtime image's tag (`spinlet/runtime-python3:1`), built first when it is missing."""
    from spinlet.runtime.images import DEFAULT_RUNTIME_IMAGE, ensure_runtime_image

    ensure_runtime_image(docker_client, image=DEFAULT_RUNTIME_IMAGE, progress=lambda line: None)
    return DEFAULT_RUNTIME_IMAGE


@pytest.fixture(
    params=[pytest.param(runtime, id=runtime.name, marks=pytest.mark.docker) for runtime in SHIPPED]
)
def shipped(request: pytest.FixtureRequest, docker_client: Any, runtime_image_tag: str) -> Shipped:
    """Each shipped runtime in turn (`tests/runtimes.py`), its image built as the node builds it
    when it is missing or stale."""
    from spinlet.runtime.catalog import shipped as catalog_entry
    from spinlet.runtime.images import ensure_runtime_image

    runtime: Shipped = request.param
    if runtime.image != runtime_image_tag:
        entry = catalog_entry(runtime.name)
        assert entry is not None, runtime.name
        ensure_runtime_image(docker_client, runtime=entry, progress=lambda line: None)
    return runtime
