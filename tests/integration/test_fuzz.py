"""Schemathesis drives the API from the OpenAPI document it serves (functions as local processes).

Every answer must be one the document describes: no 5xx, a documented status code and content
type, a body that matches its schema. Each operation is one test. A few objects are made first
(a function, a version, an alias, an execution) and given to the path parameters as examples,
and a few working request bodies to the bodies, so requests reach real objects and make new
ones as well as being refused. The run is bounded and seeded: the same requests every time, but
for the ids the server makes (schemathesis reuses those it has seen in answers).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import hypothesis
import pytest
import schemathesis
from aiohttp import web
from sqlalchemy import make_url

from spinlet.api import openapi
from spinlet.api.app import create_app
from spinlet.domain import DEFAULT_PROJECT, Role
from spinlet.services.tokens import TokenService
from spinlet.settings import Settings
from spinlet.store import Store

# `_admin` runs a statement on the PostgreSQL server (as the `fresh_postgres` fixture does).
from tests.conftest import FUNCTIONS, STORE, _admin, unavailable

#: Generated cases per operation in the fuzzing phase; the examples and coverage phases add
#: theirs (the examples below, and the edge values of each parameter and field).
MAX_EXAMPLES = 25
SEED = 20240601

T = TypeVar("T")
Case = schemathesis.Case[Any]


class LiveServer:
    """An event loop of its own in a thread, to serve the app on a free loopback port
    (schemathesis calls it with blocking requests)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def _start(self, app: web.Application) -> str:
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def serve(self, app: web.Application) -> str:
        """Start serving; the URL."""
        return self.run(self._start(app))

    def stop_serving(self) -> None:
        """Stop the app (it closes its store and backend)."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            self.run(runner.cleanup())

    def close(self) -> None:
        try:
            self.stop_serving()
            self.run(self.loop.shutdown_asyncgens())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=60)
            self.loop.close()


#: The objects `seed` makes, given to the path parameters as examples (by path and name):
#: names where the API takes them, and an execution id chosen here, so that the schema can be
#: built at collection time, before the server exists.
FUNCTION = "fuzz-hello"
ALIAS = "fuzz-live"
EXECUTION = "00000000-0000-4000-8000-00000000f022"
KNOWN = {
    ("/v1/functions/", "id"): FUNCTION,
    ("/v1/functions/", "number"): 1,
    ("/v1/runtimes/", "id"): "python3",
    ("/v1/aliases/", "name"): ALIAS,
    ("/v1/executions/", "id"): EXECUTION,
}
SOURCE = (FUNCTIONS / "hello.py").read_text()
#: Request bodies that work (the first time), as examples, by operation and media type.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/functions"): {
        "multipart/form-data": {"name": "fuzz-form", "package": SOURCE},
        "application/json": {
            "name": "fuzz-json",
            "package": base64.b64encode(SOURCE.encode()).decode(),
            "environment": {"GREETING": "hi"},
        },
    },
    ("post", "/v1/aliases"): {
        "application/json": {
            "name": "fuzz-alias",
            "function_id": FUNCTION,
            "function_version": 0,  # there always (version 1 may be deleted by then)
            "description": "made by the fuzz",
        }
    },
    ("post", "/v1/webhooks"): {
        "application/json": {"function_id": FUNCTION, "mode": "http", "description": "fuzz"}
    },
    ("post", "/v1/executions"): {
        "application/json": {"function_alias": ALIAS, "input": {"name": "fuzz"}, "sync": False}
    },
    ("post", "/v1/jobs"): {
        "application/json": {
            "function_id": FUNCTION,
            "pattern": "0 9 * * 1-5",
            "timezone": "Europe/Paris",
            "function_input": {"name": "fuzz"},
        }
    },
}


def seed(client: httpx.Client) -> None:
    """Make the objects of `KNOWN` that are missing (an earlier test may have deleted or
    renamed them): a function, its version 1, an alias of that, an execution."""

    def missing(path: str) -> bool:
        status = client.get(path).status_code
        assert status in (200, 404), (path, status)
        return status == 404

    def made(response: httpx.Response) -> None:
        assert response.status_code in (200, 201), response.text

    package = {"package": ("hello.py", SOURCE.encode())}
    if missing(f"/v1/functions/{FUNCTION}"):
        made(client.post("/v1/functions", data={"name": FUNCTION}, files=package))
    if missing(f"/v1/functions/{FUNCTION}/versions/1"):
        # Numbers are not reused: once version 1 is deleted, this makes another.
        made(client.post(f"/v1/functions/{FUNCTION}/versions", json={}))
    if missing(f"/v1/aliases/{ALIAS}"):
        made(client.post("/v1/aliases", json={"name": ALIAS, "function_id": FUNCTION}))
    if missing(f"/v1/executions/{EXECUTION}"):
        body = {"id": EXECUTION, "function_id": FUNCTION, "input": {"name": "seed"}}
        made(client.post("/v1/executions", json=body))


def with_examples(document: dict[str, Any]) -> dict[str, Any]:
    """The document with `KNOWN` and `BODIES` as examples (which the served one has not)."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for param in operation["parameters"]:
                for (prefix, name), value in KNOWN.items():
                    if param["in"] == "path" and param["name"] == name and path.startswith(prefix):
                        param["examples"] = {"seeded": {"value": value}}
            for media, body in BODIES.get((method, path), {}).items():
                operation["requestBody"]["content"][media]["examples"] = {"works": {"value": body}}
    return document


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            "allow-x00": True,  # refused (400) on every store: PostgreSQL cannot keep them
        },
        # Each operation on its own: sequences of calls are not generated.
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # The API is lenient on purpose, for the Qinling clients: unknown fields are
            # ignored, null means "not given", "2" is read as 2 and an empty body as `{}`. So
            # requests the document does not allow are often accepted, by design.
            "negative_data_rejection": {"enabled": False},
        },
        "operations": [
            {
                # Their handlers refuse (400, documented) what the document says in words
                # only: a package must be a real .py or .zip (functions); a run names a
                # function or an alias (POST executions); a canary has both version and weight,
                # and a new alias a name and a function (aliases), a webhook a function or an
                # alias, and a version that exists (webhooks); filters follow `op:value`
                # with numbers, times or statuses (GET executions); a purge is given keep_last
                # or to_datetime (DELETE executions); a job has a cron pattern, a time zone and
                # times to come (jobs). So requests the document allows may be refused there;
                # everywhere else they must not be.
                "include-name": [
                    "POST /v1/functions",
                    "PUT /v1/functions/{id}",
                    "POST /v1/aliases",
                    "PUT /v1/aliases/{name}",
                    "POST /v1/webhooks",
                    "PUT /v1/webhooks/{id}",
                    "GET /v1/executions",
                    "POST /v1/executions",
                    "DELETE /v1/executions",
                    "POST /v1/jobs",
                    "PUT /v1/jobs/{id}",
                ],
                "checks": {"positive_data_acceptance": {"enabled": False}},
            }
        ],
    }
)
schema = schemathesis.openapi.from_dict(with_examples(openapi.document()), config=CONFIG)


#: The admin token every request sends (made with the server's store).
TOKEN = ""


async def make_token(database_url: str) -> None:
    global TOKEN
    store = await Store.open(database_url)
    try:
        _, TOKEN = await TokenService(store).create(DEFAULT_PROJECT, Role.ADMIN, "fuzz")
    finally:
        await store.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """One server for the whole module (on SQLite, or a new PostgreSQL database when
    `SPINLET_TEST_STORE=postgres`, as the `settings` fixture does); its URL."""
    live = LiveServer()
    # A generated `requirements` that parses is built by the node's pip: never from an index.
    offline = pytest.MonkeyPatch()
    offline.setenv("PIP_NO_INDEX", "1")
    database = f"spinlet_fuzz_{uuid.uuid4().hex[:12]}"
    made_on: str | None = None  # the PostgreSQL server the database was made on
    try:
        database_url = None
        if STORE == "postgres":
            admin_url: str = request.getfixturevalue("postgres_url")
            try:
                live.run(_admin(admin_url, f'CREATE DATABASE "{database}"'))
            except OSError as exc:
                unavailable(f"PostgreSQL at {admin_url} is unreachable: {exc}")
            made_on = admin_url
            url = make_url(admin_url).set(database=database)
            database_url = url.render_as_string(hide_password=False)
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("fuzz") / "data",
            node_id=f"fuzz-{uuid.uuid4().hex[:8]}",
            database_url=database_url,
            backend="process",
            auth="on",  # as on any address but loopback: every request with the token
            max_wait=1.0,  # a generated `?wait=` returns within a second
            concurrency_wait=1.0,
            cancel_grace=0.5,
        )
        live.run(make_token(settings.db_url))
        base = live.serve(create_app(settings))
        # What is fuzzed is what the server serves.
        assert httpx.get(f"{base}/v1/openapi.json").json() == openapi.document()
        yield base
    finally:
        live.stop_serving()
        if made_on is not None:
            live.run(_admin(made_on, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        live.close()
        offline.undo()


@pytest.fixture
def base_url(server: str) -> str:
    """The server, with the seeded objects there (again) for the next operation."""
    with httpx.Client(base_url=server, timeout=60, headers={"X-Auth-Token": TOKEN}) as client:
        seed(client)
    return server


@schema.parametrize()
# `base_url` seeds again before each operation, not before each of its examples: on purpose.
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_the_api_answers_as_its_document_says(case: Case, base_url: str) -> None:
    response = case.call(base_url=base_url, headers={"X-Auth-Token": TOKEN})
    case.validate_response(response)
