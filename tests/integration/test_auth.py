"""Tokens and projects: who may call what, and that no project ever sees another's objects."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.api.keys import SERVICES
from spinlet.domain import Role
from spinlet.settings import Settings
from tests.helpers import eventually, make_package
from tests.integration.test_api import form

Client = TestClient[Any, Any]
ECHO = "def main(event):\n    return event\n"


@dataclass
class Caller:
    """A token's secret, and the client that sends it."""

    api: Client
    token: str

    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token}

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.api.request(method, path, headers=self.headers(), **kwargs)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        assert response.status == status, (method, path, await response.text())
        return await response.json() if response.status != 204 else None


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> Client:
    """An API that requires tokens, on the process backend."""
    return await aiohttp_client(create_app(settings.evolve(backend="process", auth="on")))


async def caller(api: Client, project: str, role: Role = Role.MEMBER) -> Caller:
    _, secret = await api.server.app[SERVICES].tokens.create(project, role)
    return Caller(api, secret)


async def populate(owner: Caller) -> dict[str, str]:
    """A function with a version, an alias, an execution, a runtime, a token and a cron job of
    the owner's project."""
    function = await owner.ok(
        "POST", "/v1/functions", 201, data=form("secret-fn", data=make_package(ECHO))
    )
    await owner.ok("POST", f"/v1/functions/{function['id']}/versions", 201)
    await owner.ok("POST", "/v1/aliases", 201, json={"name": "prod", "function_id": "secret-fn"})
    execution = await owner.ok(
        "POST", "/v1/executions", 201, json={"function_id": "secret-fn", "input": 1}
    )
    assert execution["status"] == "success"
    runtime = await owner.ok(
        "POST", "/v1/runtimes", 201, json={"name": "private-rt", "image": "any:image"}
    )
    token = await owner.ok("POST", "/v1/tokens", 201, json={"name": "deploys"})
    webhook = await owner.ok("POST", "/v1/webhooks", 201, json={"function_id": "secret-fn"})
    job = await owner.ok(
        "POST", "/v1/jobs", 201, json={"function_id": "secret-fn", "pattern": "0 0 1 1 *"}
    )
    return {
        "job": job["id"],
        "function": function["id"],
        "function_name": "secret-fn",
        "alias": "prod",
        "execution": execution["id"],
        "runtime": runtime["id"],
        "token": token["id"],
        "webhook": webhook["id"],
    }


#: A valid body for each operation that takes one, so only the scoping can refuse it.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("put", "/v1/runtimes/{id}"): {"json": {"description": "mine now"}},
    ("put", "/v1/functions/{id}"): {"json": {"description": "mine now"}},
    ("post", "/v1/functions/{id}/invoke"): {"json": {"x": 1}},
    ("post", "/v1/functions/{id}/versions"): {"json": {"description": "mine now"}},
    ("put", "/v1/aliases/{name}"): {"json": {"description": "mine now"}},
    ("post", "/v1/executions/{id}/cancel"): {"json": {}},
    ("put", "/v1/jobs/{id}"): {"json": {"status": "paused"}},
}


def fill(path: str, objects: dict[str, str]) -> str:
    """The path with another project's objects as its parameters."""
    collection = path.split("/")[2]
    ids = {
        "runtimes": "runtime",
        "functions": "function",
        "executions": "execution",
        "tokens": "token",
        "webhooks": "webhook",
        "jobs": "job",
    }
    if collection == "aliases":
        return path.replace("{name}", objects["alias"])
    return path.replace("{id}", objects[ids[collection]]).replace("{number}", "1")


async def test_every_route_hides_another_projects_objects(api: Client) -> None:
    owner = await caller(api, "alpha", Role.ADMIN)
    objects = await populate(owner)
    # An admin of another project is still scoped to it: admins may list every project's
    # objects (all_projects), not reach into them.
    intruder = await caller(api, "beta", Role.ADMIN)
    document = await (await api.get("/v1/openapi.json")).json()
    walked = set()
    for path, operations in document["paths"].items():
        # A webhook's URL acts for whoever knows its secret id, whatever their project.
        if "{" not in path or path == "/v1/webhooks/{id}/invoke":
            continue
        targets = {fill(path, objects)}
        if path.startswith("/v1/functions/"):  # by name as well as by id
            targets.add(fill(path, {**objects, "function": objects["function_name"]}))
        for method in operations:
            for target in targets:
                response = await intruder.call(method, target, **BODIES.get((method, path), {}))
                assert response.status == 404, (method, target, await response.text())
                assert (await response.json())["error"]["code"] == "not_found"
            walked.add((method, path))
    assert len(walked) >= 23  # every operation on one object, which the document has
    # Creating things that point at the other project's objects finds nothing either.
    for path, body in (
        ("/v1/executions", {"function_id": objects["function"]}),
        ("/v1/executions", {"function_alias": "prod"}),
        ("/v1/executions", {"source_execution_id": objects["execution"]}),
        ("/v1/aliases", {"name": "mine", "function_id": objects["function"]}),
        ("/v1/webhooks", {"function_id": objects["function"]}),
        ("/v1/webhooks", {"function_alias": "prod"}),
        ("/v1/jobs", {"function_id": objects["function"], "pattern": "* * * * *"}),
        ("/v1/jobs", {"function_alias": "prod", "pattern": "* * * * *"}),
    ):
        response = await intruder.call("POST", path, json=body)
        assert response.status == 404, (path, body, await response.text())
    # Listings show none of them, and purging executions purges only one's own.
    assert (await intruder.ok("GET", "/v1/functions"))["functions"] == []
    assert (await intruder.ok("GET", "/v1/aliases"))["function_aliases"] == []
    assert (await intruder.ok("GET", "/v1/webhooks"))["webhooks"] == []
    assert (await intruder.ok("GET", "/v1/executions"))["executions"] == []
    assert (await intruder.ok("GET", "/v1/jobs"))["jobs"] == []
    runtimes = (await intruder.ok("GET", "/v1/runtimes"))["runtimes"]
    # the public (shipped) ones only
    assert [rt["name"] for rt in runtimes] == ["python3", "python3.13", "nodejs20"]
    assert (await intruder.ok("DELETE", "/v1/executions?keep_last=0"))["deleted"] == 0
    # The owner still has everything, unchanged.
    function = await owner.ok("GET", f"/v1/functions/{objects['function']}")
    assert function["description"] != "mine now"
    assert (await owner.ok("GET", "/v1/functions/secret-fn/versions"))["function_versions"]
    assert (await owner.ok("GET", "/v1/aliases/prod"))["function_version"] == 0
    execution = await owner.ok("GET", f"/v1/executions/{objects['execution']}")
    assert execution["result"] == 1
    assert (await owner.ok("GET", f"/v1/runtimes/{objects['runtime']}"))["name"] == "private-rt"
    assert (await owner.ok("GET", f"/v1/jobs/{objects['job']}"))["status"] == "running"
    theirs = {t["id"] for t in (await intruder.ok("GET", "/v1/tokens"))["tokens"]}
    assert objects["token"] not in theirs
    assert (await owner.ok("GET", f"/v1/tokens/{objects['token']}"))["revoked_at"] is None


async def test_an_execution_id_another_project_holds_is_a_conflict_that_tells_nothing(
    api: Client,
) -> None:
    objects = await populate(await caller(api, "alpha", Role.ADMIN))
    intruder = await caller(api, "beta")
    await intruder.ok("POST", "/v1/functions", 201, data=form("mine", data=make_package(ECHO)))
    taken = {"id": objects["execution"], "function_id": "mine", "input": 1}
    response = await intruder.call("POST", "/v1/executions", json=taken)
    assert response.status == 409, await response.text()
    body = await response.json()
    assert body["error"]["code"] == "conflict"
    assert "secret-fn" not in await response.text()
    # The same answer as a retry with another request in one's own project.
    mine = await intruder.ok("POST", "/v1/executions", 201, json={"function_id": "mine"})
    again = await intruder.call(
        "POST", "/v1/executions", json={"id": mine["id"], "function_id": "mine", "input": 2}
    )
    assert (await again.json())["error"]["message"] == body["error"]["message"].replace(
        objects["execution"], mine["id"]
    )


async def test_each_project_has_its_own_names(api: Client) -> None:
    projects = {"alpha": await caller(api, "alpha"), "beta": await caller(api, "beta")}
    for project, who in projects.items():
        source = f"def main(event):\n    return {project!r}\n"
        await who.ok("POST", "/v1/functions", 201, data=form("same", data=make_package(source)))
    for project, who in projects.items():
        record = await who.ok("POST", "/v1/executions", 201, json={"function_id": "same"})
        assert (record["result"], record["project_id"]) == (project, project)


async def test_requests_without_a_valid_token_are_refused(api: Client) -> None:
    member = await caller(api, "alpha")
    for headers in ({}, {"X-Auth-Token": "spl_made-up"}, {"Authorization": "Bearer nope"}):
        response = await api.get("/v1/functions", headers=headers)
        body = await response.json()
        assert response.status == 401 and body["error"]["code"] == "unauthorized", headers
    response = await api.get("/v1/functions", headers={"Authorization": f"Bearer {member.token}"})
    assert response.status == 200
    # What describes the server, not a project, needs no token.
    for path in ("/", "/v1", "/health", "/ready", "/v1/openapi.json"):
        assert (await api.get(path)).status == 200, path


async def test_the_document_says_which_operations_need_a_token(api: Client) -> None:
    """Those it marks `security` are refused without one; the others are answered (a webhook
    URL with a wrong id: a 404)."""
    document = await (await api.get("/v1/openapi.json")).json()
    public = set()
    for path, operations in document["paths"].items():
        url = path.replace("{id}", "x").replace("{name}", "x").replace("{number}", "1")
        for method, operation in operations.items():
            response = await api.request(method, url)
            if "security" in operation:
                assert response.status == 401, (method, path)
            else:
                assert response.status == (404 if "{" in path else 200), (method, path)
                public.add(path)
    assert public == {
        "/",
        "/v1",
        "/health",
        "/ready",
        "/v1/openapi.json",
        "/v1/webhooks/{id}/invoke",
    }


async def test_a_revoked_token_stops_working_at_once(api: Client) -> None:
    member = await caller(api, "alpha")
    await member.ok("GET", "/v1/functions")
    tokens = api.server.app[SERVICES].tokens
    (record,) = await tokens.list("alpha")
    assert (await tokens.revoke(record.prefix)).revoked_at is not None
    response = await member.call("GET", "/v1/functions")
    assert response.status == 401
    assert "revoked" in (await response.json())["error"]["message"]


async def test_admins_alone_list_all_projects_and_manage_runtimes(api: Client) -> None:
    admin = await caller(api, "ops", Role.ADMIN)
    member = await caller(api, "alpha")
    other = await caller(api, "beta")
    for who in (member, other):
        await who.ok("POST", "/v1/functions", 201, data=form("fn", data=make_package(ECHO)))
        await who.ok("POST", "/v1/executions", 201, json={"function_id": "fn"})
        await who.ok("POST", "/v1/aliases", 201, json={"name": "live", "function_id": "fn"})
    for path, key in (
        ("/v1/functions", "functions"),
        ("/v1/executions", "executions"),
        ("/v1/aliases", "function_aliases"),
    ):
        response = await member.call("GET", f"{path}?all_projects=true")
        assert response.status == 403, path
        assert (await response.json())["error"]["code"] == "forbidden"
        mine = (await member.ok("GET", f"{path}?all_projects=false"))[key]
        assert {row["project_id"] for row in mine} == {"alpha"}
        everyone = (await admin.ok("GET", f"{path}?all_projects=true"))[key]
        assert sorted(row["project_id"] for row in everyone) == ["alpha", "beta"], path
        assert (await admin.ok("GET", path))[key] == []  # without it: the admin's own project
    body = {"name": "custom", "image": "any:image"}
    assert (await member.call("POST", "/v1/runtimes", json=body)).status == 403
    runtime = await admin.ok("POST", "/v1/runtimes", 201, json=body)
    assert await admin.ok("PUT", f"/v1/runtimes/{runtime['id']}", json={"description": "d"})
    assert (
        await member.call("PUT", "/v1/runtimes/python3", json={"description": "x"})
    ).status == 403
    assert (await member.call("DELETE", "/v1/runtimes/python3")).status == 403
    assert (await member.call("GET", "/metrics")).status == 403
    assert (await admin.call("GET", "/metrics")).status == 200
    # Members run their functions on the public runtime all the same.
    assert [rt["name"] for rt in (await member.ok("GET", "/v1/runtimes"))["runtimes"]] == [
        "python3",
        "python3.13",
        "nodejs20",
    ]
    assert (await member.call("POST", "/v1/runtimes/python3.13/build")).status == 403
    building = await admin.ok("POST", "/v1/runtimes/python3.13/build", 202)
    assert building["name"] == "python3.13"


async def test_tokens_never_reach_the_log(api: Client, caplog: pytest.LogCaptureFixture) -> None:
    member = await caller(api, "alpha")
    caplog.set_level(logging.DEBUG)
    await member.ok("GET", "/v1/functions")
    await api.get("/v1/functions", headers={"X-Auth-Token": member.token + "x"})
    await member.call("GET", "/v1/functions/nope")
    assert caplog.records  # the requests were logged (aiohttp's access log at least)
    assert member.token not in caplog.text
    assert member.token[4:] not in caplog.text


def test_auth_is_on_unless_the_server_listens_on_loopback_only(settings: Settings) -> None:
    for host, expected in (
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("0.0.0.0", True),
        ("192.168.1.10", True),
        ("node.example", True),
    ):
        assert settings.evolve(host=host).auth_enabled is expected, host
    assert settings.evolve(host="0.0.0.0", auth="off").auth_enabled is False
    assert settings.evolve(auth="on").auth_enabled is True


SLEEP = "import time\ndef main(event):\n    time.sleep(event)\n    return event\n"


async def test_a_project_at_its_quota_waits_and_other_projects_run(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> None:
    app = create_app(
        settings.evolve(
            backend="process", auth="on", project_concurrency=1, concurrency_wait=0.3, workers=4
        )
    )
    api = await aiohttp_client(app)
    greedy, modest = await caller(api, "greedy"), await caller(api, "modest")
    for who in (greedy, modest):
        for name in ("slow", "other"):
            await who.ok("POST", "/v1/functions", 201, data=form(name, data=make_package(SLEEP)))
    # An async execution holds the project's one slot for as long as it runs.
    busy = await greedy.ok(
        "POST", "/v1/executions", 202, json={"function_id": "slow", "input": 60, "sync": False}
    )

    async def running() -> bool:
        record = await greedy.ok("GET", f"/v1/executions/{busy['id']}")
        return bool(record["status"] == "running")

    await eventually(running)
    # Another function of the same project: its quota is taken, so a 429 after a short wait.
    refused = await greedy.call("POST", "/v1/executions", json={"function_id": "other", "input": 0})
    body = await refused.json()
    assert refused.status == 429 and "project greedy" in body["error"]["message"]
    queued = await greedy.ok(
        "POST", "/v1/executions", 202, json={"function_id": "other", "input": 0, "sync": False}
    )
    # Another project runs at once, sync and async.
    ran = await modest.ok("POST", "/v1/executions", 201, json={"function_id": "slow", "input": 0})
    assert ran["status"] == "success"
    fired = await modest.ok(
        "POST", "/v1/executions", 202, json={"function_id": "other", "input": 0, "sync": False}
    )
    done = await modest.ok("GET", f"/v1/executions/{fired['id']}?wait=10")
    assert done["status"] == "success"
    record = await greedy.ok("GET", f"/v1/executions/{queued['id']}")
    assert record["status"] == "queued"  # workers are free; its project is not
    # Once the project's slot frees, its queued execution runs.
    await greedy.ok("POST", f"/v1/executions/{busy['id']}/cancel", json={"kill": True})
    finished = await greedy.ok("GET", f"/v1/executions/{queued['id']}?wait=10")
    assert finished["status"] == "success"


async def test_admins_manage_their_projects_tokens_over_http(api: Client) -> None:
    admin = await caller(api, "alpha", Role.ADMIN)
    made = await admin.ok("POST", "/v1/tokens", 201, json={"name": "ci", "role": "member"})
    assert (made["project_id"], made["role"], made["name"]) == ("alpha", "member", "ci")
    member = Caller(api, made["token"])
    assert made["token"].startswith(made["prefix"])
    await member.ok("POST", "/v1/functions", 201, data=form("fn", data=make_package(ECHO)))
    # The secret is in the answer to its creation only.
    listed = (await admin.ok("GET", "/v1/tokens"))["tokens"]
    assert made["id"] in {t["id"] for t in listed}
    assert all("token" not in t for t in listed)
    assert "token" not in await admin.ok("GET", f"/v1/tokens/{made['id']}")
    # Members manage no tokens, not even their own.
    for method, path in (
        ("POST", "/v1/tokens"),
        ("GET", "/v1/tokens"),
        ("GET", f"/v1/tokens/{made['id']}"),
        ("DELETE", f"/v1/tokens/{made['id']}"),
    ):
        response = await member.call(method, path, json={})
        assert response.status == 403, (method, path)
        assert (await response.json())["error"]["code"] == "forbidden"
    # Revoked over HTTP: refused at once, and the record says when.
    revoked = await admin.ok("DELETE", f"/v1/tokens/{made['id']}")
    assert revoked["revoked_at"] is not None
    assert (await member.call("GET", "/v1/functions")).status == 401
    again = await admin.ok("GET", f"/v1/tokens/{made['id']}")
    assert again["revoked_at"] == revoked["revoked_at"]
    # An admin token made over HTTP is an admin of the same project; bad bodies are 400s.
    second = Caller(
        api, (await admin.ok("POST", "/v1/tokens", 201, json={"role": "admin"}))["token"]
    )
    assert (await second.ok("GET", "/v1/tokens"))["tokens"][0]["project_id"] == "alpha"
    for body in ({"role": "owner"}, {"project_id": "beta"}, {"name": "x" * 300}):
        response = await admin.call("POST", "/v1/tokens", json=body)
        assert response.status == 400, body
    # Admins see every project's tokens with all_projects, their own without.
    await caller(api, "beta", Role.ADMIN)
    everyone = (await admin.ok("GET", "/v1/tokens?all_projects=true"))["tokens"]
    assert {t["project_id"] for t in everyone} == {"alpha", "beta"}
    assert {t["project_id"] for t in (await admin.ok("GET", "/v1/tokens"))["tokens"]} == {"alpha"}
