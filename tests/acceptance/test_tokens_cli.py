"""`spinlet tokens …` and a server that requires tokens, used through the CLI."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from spinlet.services.tokens import REMEMBER
from tests.acceptance.conftest import Server, spinlet_bin, start_server, stop_server
from tests.conftest import FUNCTIONS, REPO


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"), "process", env={"SPINLET_AUTH": "on"})
    yield server
    stop_server(server)


def spinlet(
    server: Server, *args: str, token: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in server.env().items() if k != "SPINLET_TOKEN"}
    if token is not None:
        env["SPINLET_TOKEN"] = token
    done = subprocess.run(
        [spinlet_bin(), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode == 0) == ok, (
        f"spinlet {' '.join(args)}: exit status {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done


def test_the_first_admin_token_then_a_projects_work(server: Server) -> None:
    log = server.log()
    assert "API tokens required" in log
    assert "spinlet tokens create --role admin" in log  # how to get the first token
    data = ("--data-dir", str(server.data_dir))

    # The secret alone on stdout, so `TOKEN=$(spinlet tokens create …)` works.
    admin = spinlet(server, "tokens", "create", "--role", "admin", *data).stdout.strip()
    assert admin.startswith("spl_") and "\n" not in admin
    member = json.loads(
        spinlet(
            server, "--json", "tokens", "create", "--project", "acme", "--name", "ci", *data
        ).stdout
    )
    assert (member["project_id"], member["role"], member["name"]) == ("acme", "member", "ci")

    refused = spinlet(server, "functions", "list", ok=False)
    assert "unauthorized" in refused.stderr
    hello = str(FUNCTIONS / "hello.py")
    spinlet(server, "functions", "create", "hello", hello, token=member["token"])
    ran = spinlet(
        server, "--json", "invoke", "hello", "--input", '{"name": "Ada"}', token=member["token"]
    )
    assert json.loads(ran.stdout)["result"] == {"greeting": "Hello, Ada!"}
    # The admin's project is another one: the member's function is not there.
    assert json.loads(spinlet(server, "--json", "functions", "list", token=admin).stdout) == []

    listed = spinlet(server, "tokens", "list", *data).stdout
    assert member["prefix"] in listed and "acme" in listed
    assert member["token"] not in listed and admin not in listed
    spinlet(server, "tokens", "revoke", member["prefix"], *data)
    time.sleep(REMEMBER)  # the server trusts a token it looked up for that long
    again = spinlet(server, "functions", "list", token=member["token"], ok=False)
    assert "revoked" in again.stderr
    assert json.loads(spinlet(server, "--json", "tokens", "list", *data).stdout)[1]["revoked_at"]
    # No secret ever reached the server's log.
    assert admin not in server.log() and member["token"] not in server.log()
