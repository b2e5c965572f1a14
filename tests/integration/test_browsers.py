"""No drive-by use from a web page: a foreign `Origin` may not change anything and a `Host` the
node does not serve is refused, whether tokens are required or not."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.api.keys import SERVICES
from spinlet.domain import Role
from spinlet.settings import Settings
from tests.conftest import FUNCTIONS
from tests.integration.test_api import expect_error, form

Client = TestClient[Any, Any]
MakeApi = Callable[..., Coroutine[Any, Any, tuple[Client, dict[str, str]]]]


@pytest.fixture(params=["off", "on"], ids=["no-tokens", "tokens"])
def make_api(
    request: pytest.FixtureRequest,
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
) -> MakeApi:
    """The API with tokens off, or on (then with an admin's token: refused all the same)."""

    async def make(**changes: Any) -> tuple[Client, dict[str, str]]:
        changes = {"backend": "process", "stem_cells": 0, "auth": request.param, **changes}
        api = await aiohttp_client(create_app(settings.evolve(**changes)))
        if request.param == "off":
            return api, {}
        _, secret = await api.server.app[SERVICES].tokens.create("default", Role.ADMIN)
        return api, {"X-Auth-Token": secret}

    return make


def own_origin(api: Client) -> str:
    return f"http://127.0.0.1:{api.port}"


async def names(api: Client, token: dict[str, str]) -> list[str]:
    body = await (await api.get("/v1/functions", headers=token)).json()
    return [fn["name"] for fn in body["functions"]]


async def test_a_foreign_origin_changes_nothing(make_api: MakeApi) -> None:
    api, token = await make_api()
    hello = FUNCTIONS / "hello.py"
    for origin in (
        "https://evil.example",
        "null",
        f"http://localhost:{api.port}",
        "http://127.0.0.1",
    ):
        response = await api.post(
            "/v1/functions", data=form("drive-by", hello), headers={**token, "Origin": origin}
        )
        message = await expect_error(response, 403, "foreign_origin")
        assert origin in message
    assert await names(api, token) == []
    # Its own origin, and no Origin at all (curl, SDKs), may.
    response = await api.post(
        "/v1/functions", data=form("own", hello), headers={**token, "Origin": own_origin(api)}
    )
    assert response.status == 201, await response.text()
    response = await api.post("/v1/functions", data=form("curl", hello), headers=token)
    assert response.status == 201, await response.text()
    # Every state-changing method is checked; reading is not (the browser hides the answer).
    foreign = {**token, "Origin": "https://evil.example"}
    for method, path in (
        ("POST", "/v1/functions/own/invoke"),
        ("POST", "/v1/executions"),
        ("PUT", "/v1/functions/own"),
        ("PATCH", "/v1/functions/own"),
        ("DELETE", "/v1/functions/own"),
    ):
        response = await api.request(method, path, json={"function_id": "own"}, headers=foreign)
        await expect_error(response, 403, "foreign_origin")
    assert (await api.get("/v1/executions", headers=token)).status == 200
    assert (await api.get("/v1/executions", headers=foreign)).status == 200
    assert (await (await api.get("/v1/executions", headers=token)).json())["executions"] == []
    assert sorted(await names(api, token)) == ["curl", "own"]


async def test_a_host_the_node_does_not_serve_is_refused(make_api: MakeApi) -> None:
    api, token = await make_api()
    for host in (f"rebound.example:{api.port}", "rebound.example", "10.1.2.3", "a b", "x:y"):
        for path in ("/v1/functions", "/health"):
            response = await api.get(path, headers={**token, "Host": host})
            message = await expect_error(response, 403, "host_not_allowed")
            assert repr(host) in message and "SPINLET_ALLOWED_HOSTS" in message
    # Refused before any token is looked at.
    response = await api.get("/v1/functions", headers={"Host": "rebound.example"})
    await expect_error(response, 403, "host_not_allowed")
    response = await api.post("/v1/executions", json={}, headers={"Origin": "https://x.example"})
    await expect_error(response, 403, "foreign_origin")
    # Its listening address and loopback, by name or address, whatever the port.
    for host in (f"127.0.0.1:{api.port}", "localhost", "LOCALHOST:1", "[::1]:80", "127.0.0.2"):
        response = await api.get("/v1/functions", headers={**token, "Host": host})
        assert response.status == 200, (host, await response.text())


async def test_allowed_hosts_let_a_load_balancer_through(make_api: MakeApi) -> None:
    api, token = await make_api(allowed_hosts=("spinlet.example", "LB.Internal:8080"))
    for host in ("spinlet.example", "lb.internal:8080"):
        response = await api.get("/v1/functions", headers={**token, "Host": host})
        assert response.status == 200, (host, await response.text())
    await expect_error(
        await api.get("/v1/functions", headers={**token, "Host": "other.example"}),
        403,
        "host_not_allowed",
    )
    # A page served through the load balancer is of the node's own origin; the port must match.
    hello = FUNCTIONS / "hello.py"
    behind = {**token, "Host": "spinlet.example"}
    for origin in ("https://spinlet.example", "http://spinlet.example"):
        response = await api.post(
            "/v1/functions", data=form("lb", hello), headers={**behind, "Origin": origin}
        )
        assert response.status == 201, await response.text()
        await api.delete("/v1/functions/lb", headers=token)
    response = await api.post(
        "/v1/functions",
        data=form("lb", hello),
        headers={**behind, "Origin": "http://spinlet.example:3000"},
    )
    await expect_error(response, 403, "foreign_origin")
    # `*`: any host.
    api, token = await make_api(allowed_hosts=("*",))
    response = await api.get("/health", headers={**token, "Host": "anything.example"})
    assert response.status == 200


async def test_a_node_on_every_address_serves_any_address_but_no_unknown_name(
    make_api: MakeApi,
) -> None:
    api, token = await make_api(host="0.0.0.0")
    for host in ("10.1.2.3:7070", "192.168.0.7", "[2001:db8::1]:7070", "localhost"):
        response = await api.get("/health", headers={**token, "Host": host})
        assert response.status == 200, (host, await response.text())
    response = await api.get("/health", headers={**token, "Host": "rebound.example:7070"})
    await expect_error(response, 403, "host_not_allowed")


def test_allowed_hosts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINLET_ALLOWED_HOSTS", " spinlet.example, LB.internal ,,")
    assert Settings.from_env().allowed_hosts == ("spinlet.example", "lb.internal")
    monkeypatch.delenv("SPINLET_ALLOWED_HOSTS")
    assert Settings.from_env().allowed_hosts == ()
