"""Webhooks: URLs that run a function without a token, queued (Qinling's shape) or at once with
an HTTP event whose answer shapes the response; capped in size and in calls per second."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.api.keys import SERVICES
from spinlet.domain import Role
from spinlet.settings import Settings
from tests.helpers import make_package
from tests.integration.conftest import ApiFactory
from tests.integration.test_api import form

Client = TestClient[Any, Any]

ECHO = "def main(event):\n    return event\n"
SECRET = "it-is-a-secret"
#: Checks a GitHub-style signature of the exact body bytes, then answers with a shaped response
#: that tries what a function may not do (set a cookie, framing and security headers).
SIGNED = """
import base64, hashlib, hmac, os

def main(event):
    raw = event["body"]
    body = base64.b64decode(raw) if event["isBase64Encoded"] else raw.encode()
    key = os.environ["HOOK_SECRET"].encode()
    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, event["headers"].get("x-hub-signature-256", "")):
        return {"statusCode": 401, "body": "bad signature"}
    return {
        "statusCode": 201,
        "headers": {
            "Content-Type": "application/octet-stream",
            "Set-Cookie": "session=stolen",
            "Connection": "close",
            "Content-Security-Policy": "default-src *",
            "X-Method": event["requestContext"]["http"]["method"],
            "X-Query": event["queryStringParameters"]["q"],
            "X-Path": event["rawPath"],
        },
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }
"""
FAILS = "def main(event):\n    raise ValueError('no such order')\n"


async def ok(api: Client, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
    response = await api.request(method, path, **kwargs)
    assert response.status == status, (method, path, await response.text())
    return await response.json() if status != 204 else None


async def function(api: Client, name: str, source: str, **fields: Any) -> dict[str, Any]:
    data = form(name, data=make_package(source), **fields)
    result: dict[str, Any] = await ok(api, "POST", "/v1/functions", 201, data=data)
    return result


def invoke_path(hook: dict[str, Any]) -> str:
    return f"/v1/webhooks/{hook['id']}/invoke"


def waited(called: dict[str, Any]) -> str:
    """The execution a webhook call queued, once it has ended."""
    return f"/v1/executions/{called['execution_id']}?wait=60"


async def test_a_webhook_runs_without_a_token_and_is_gone_once_deleted(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(auth="on")
    _, token = await api.server.app[SERVICES].tokens.create("team", Role.MEMBER)
    auth = {"X-Auth-Token": token}
    response = await api.post(
        "/v1/functions", data=form("hooked", data=make_package(ECHO)), headers=auth
    )
    assert response.status == 201, await response.text()
    hook = await ok(
        api,
        "POST",
        "/v1/webhooks",
        201,
        json={"function_id": "hooked", "description": "orders"},
        headers=auth,
    )
    assert len(hook["id"]) == 32 and int(hook["id"], 16) >= 0  # 128 random bits
    assert hook["webhook_url"].endswith(invoke_path(hook))
    assert (hook["mode"], hook["function_version"], hook["description"]) == ("async", 0, "orders")
    # The routes that manage webhooks need a token; the webhook's own URL does not.
    assert (await api.get("/v1/webhooks")).status == 401

    # A JSON body is the input; a page of another origin may call it too.
    called = await ok(
        api,
        "POST",
        invoke_path(hook),
        202,
        json={"order": 7},
        headers={"Origin": "https://shop.example"},
    )
    execution = await ok(
        api, "GET", f"/v1/executions/{called['execution_id']}?wait=60", headers=auth
    )
    assert (execution["status"], execution["source"]) == ("success", "webhook"), execution
    assert execution["webhook_id"] == hook["id"]
    assert execution["input"] == {"order": 7} and execution["result"] == {"order": 7}
    # Any other body is the input as text.
    called = await ok(api, "POST", invoke_path(hook), 202, data=b"plain words")
    execution = await ok(
        api, "GET", f"/v1/executions/{called['execution_id']}?wait=60", headers=auth
    )
    assert execution["result"] == "plain words"
    listed = await ok(api, "GET", f"/v1/executions?webhook_id={hook['id']}", headers=auth)
    assert len(listed["executions"]) == 2

    # Another project does not see it; a foreign Host is refused even here.
    _, other = await api.server.app[SERVICES].tokens.create("others", Role.MEMBER)
    assert (
        await api.get(f"/v1/webhooks/{hook['id']}", headers={"X-Auth-Token": other})
    ).status == 404
    refused = await api.post(invoke_path(hook), headers={"Host": "evil.example"})
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "host_not_allowed"

    # A wrong id is a 404, and so is a deleted webhook's, at once.
    wrong = await api.post(f"/v1/webhooks/{'0' * 32}/invoke", json={})
    assert wrong.status == 404 and (await wrong.json())["error"]["code"] == "not_found"
    await ok(api, "DELETE", f"/v1/webhooks/{hook['id']}", 204, headers=auth)
    gone = await api.post(invoke_path(hook), json={})
    assert gone.status == 404


async def test_crud_alias_and_a_function_in_use(process_api: Client) -> None:
    api = process_api
    await function(api, "target", ECHO)
    await ok(api, "POST", "/v1/functions/target/versions", 201)
    await ok(api, "POST", "/v1/aliases", 201, json={"name": "live", "function_id": "target"})
    # What the Qinling client sends: nulls for what the user did not give.
    hook = await ok(
        api,
        "POST",
        "/v1/webhooks",
        201,
        json={"function_id": None, "function_alias": "live", "function_version": 0},
    )
    assert hook["function_alias"] == "live"
    changed = await ok(
        api,
        "PUT",
        f"/v1/webhooks/{hook['id']}",
        json={"function_id": "target", "function_version": "1", "description": None},
    )
    assert (changed["function_alias"], changed["function_version"]) == (None, 1)
    assert changed["updated_at"] is not None
    assert (await ok(api, "GET", f"/v1/webhooks/{hook['id']}")) == changed
    assert [h["id"] for h in (await ok(api, "GET", "/v1/webhooks"))["webhooks"]] == [hook["id"]]

    missing = await api.put(f"/v1/webhooks/{hook['id']}", json={"function_version": 9})
    assert missing.status == 404
    # Back to the alias, then a version alone: the alias is replaced by that version.
    aliased = await ok(api, "PUT", f"/v1/webhooks/{hook['id']}", json={"function_alias": "live"})
    assert (aliased["function_alias"], aliased["function_version"]) == ("live", 0)
    both = await api.put(
        f"/v1/webhooks/{hook['id']}", json={"function_alias": "live", "function_version": 1}
    )
    assert both.status == 400
    versioned = await ok(api, "PUT", f"/v1/webhooks/{hook['id']}", json={"function_version": 1})
    assert (versioned["function_alias"], versioned["function_version"]) == (None, 1)
    await ok(api, "DELETE", "/v1/aliases/live", 204)
    refused = await api.delete("/v1/functions/target")
    assert refused.status == 403
    assert (await refused.json())["error"]["webhooks"] == [hook["id"]]
    bad = await api.post("/v1/webhooks", json={"function_id": "target", "mode": "smtp"})
    assert bad.status == 400
    await ok(api, "DELETE", f"/v1/webhooks/{hook['id']}", 204)
    assert (await api.delete(f"/v1/webhooks/{hook['id']}")).status == 404


async def test_a_body_over_the_cap_is_413(api_factory: ApiFactory) -> None:
    api = await api_factory(max_input_size=1000)
    await function(api, "small", ECHO)
    hook = await ok(api, "POST", "/v1/webhooks", 201, json={"function_id": "small"})
    response = await api.post(invoke_path(hook), data=b"x" * 200_000)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "too_large"


async def test_calls_beyond_the_projects_rate_are_429(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> None:
    api = await aiohttp_client(create_app(settings.evolve(backend="process", webhook_rate=1)))
    await function(api, "busy", ECHO)
    hook = await ok(api, "POST", "/v1/webhooks", 201, json={"function_id": "busy"})
    responses = await asyncio.gather(*(api.post(invoke_path(hook), json={}) for _ in range(10)))
    statuses = [r.status for r in responses]
    assert 202 in statuses and 429 in statuses, statuses
    refused = next(r for r in responses if r.status == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == "rate_limited"


def signed(body: bytes, key: str = SECRET) -> dict[str, str]:
    digest = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/octet-stream"}


async def test_http_mode_verifies_a_signature_and_shapes_the_response(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory()
    await function(api, "signed", SIGNED, environment={"HOOK_SECRET": SECRET})
    hook = await ok(
        api, "POST", "/v1/webhooks", 201, json={"function_id": "signed", "mode": "http"}
    )
    body = b"\xff\x00 not UTF-8 \xfe"
    response = await api.post(invoke_path(hook) + "?q=hello", data=body, headers=signed(body))
    assert response.status == 201, await response.text()
    assert await response.read() == body
    headers = response.headers
    assert headers["Content-Type"] == "application/octet-stream"
    assert (headers["X-Method"], headers["X-Query"]) == ("POST", "hello")
    assert headers["X-Path"] == invoke_path(hook)
    assert "Set-Cookie" not in headers
    assert headers["Content-Security-Policy"] == "sandbox"
    assert headers["X-Content-Type-Options"] == "nosniff"
    execution_id = headers["X-Spinlet-Execution-Id"]
    execution = await ok(api, "GET", f"/v1/executions/{execution_id}")
    assert (execution["source"], execution["webhook_id"]) == ("webhook", hook["id"])

    # A wrong signature: the function says so, with its status.
    text = b'{"action": "opened"}'
    response = await api.post(invoke_path(hook) + "?q=x", data=text, headers=signed(text, "no"))
    assert response.status == 401
    assert await response.text() == "bad signature"
    assert response.headers["Content-Security-Policy"] == "sandbox"


async def test_http_mode_plain_results_and_failures(process_api: Client) -> None:
    api = process_api
    await function(api, "plain", ECHO)
    await function(api, "fails", FAILS)
    plain = await ok(
        api, "POST", "/v1/webhooks", 201, json={"function_id": "plain", "mode": "http"}
    )
    response = await api.post(invoke_path(plain), data=b"hi there")
    assert response.status == 200
    event = await response.json()
    assert (event["body"], event["isBase64Encoded"]) == ("hi there", False)
    assert event["requestContext"]["http"]["method"] == "POST"
    assert response.headers["X-Content-Type-Options"] == "nosniff"

    failing = await ok(
        api, "POST", "/v1/webhooks", 201, json={"function_id": "fails", "mode": "http"}
    )
    response = await api.post(invoke_path(failing), json={"a": 1})
    assert response.status == 502
    error = await response.json()
    assert error["error"]["code"] == "execution_failed"
    assert "no such order" in error["error"]["message"]
    assert "Traceback" not in json.dumps(error)
