"""`spinlet webhooks …` and the SDK's `webhooks` against a real server (functions as
processes); the webhook's URL called as any HTTP client would, without a token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from spinlet.client import Client
from tests.acceptance.conftest import Server, start_server, stop_server
from tests.acceptance.test_cli_releases import as_json, spinlet
from tests.conftest import FUNCTIONS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"), "process")
    yield server
    stop_server(server)


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_webhooks_commands_and_sdk(server: Server) -> None:
    spinlet(server, "functions", "create", "cli-hook", str(FUNCTIONS / "hello.py"))
    hook = as_json(server, "webhooks", "create", "cli-hook", "--description", "from the CLI")
    assert hook["mode"] == "async" and hook["webhook_url"].startswith(server.url)
    assert hook["id"] in spinlet(server, "webhooks", "list").stdout

    status, body = post(hook["webhook_url"], b'{"name": "hook"}')
    assert status == 202
    api = Client(server.url)
    execution = api.executions.get(json.loads(body)["execution_id"], wait=60)
    assert execution["result"] == {"greeting": "Hello, hook!"}
    assert execution["webhook_id"] == hook["id"]

    http = api.webhooks.create("cli-hook", mode="http")
    assert api.webhooks.get(http["id"])["mode"] == "http"
    status, body = post(http["webhook_url"], b"")
    assert status == 200 and json.loads(body)["greeting"].startswith("Hello")
    assert api.webhooks.update(http["id"], description="sdk")["description"] == "sdk"
    assert {h["id"] for h in api.webhooks.list("cli-hook")} == {hook["id"], http["id"]}
    api.webhooks.delete(http["id"])

    assert spinlet(server, "webhooks", "delete", hook["id"]).stdout.startswith("deleted webhook")
    assert post(hook["webhook_url"], b"{}")[0] == 404
    assert as_json(server, "webhooks", "list") == []
    spinlet(server, "functions", "delete", "cli-hook")
