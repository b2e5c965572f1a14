"""The client commands load neither the store nor the server nor the Docker SDK: a command
line that feels instant (each run in a fresh interpreter, as a user's would be)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Where no node listens (the discard port): the commands fail, after loading what they need.
NOWHERE = "http://127.0.0.1:9"
HEAVY = ("sqlalchemy", "alembic", "docker", "aiohttp", "asyncpg", "aiosqlite", "httpx")

RUN = """
import json, sys
from spinlet.cli.main import cli
try:
    cli(sys.argv[1:], prog_name="spinlet")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})), file=sys.stderr)
"""


def modules_loaded(*args: str) -> list[str]:
    """The heavy modules that `spinlet ARGS` loads."""
    done = subprocess.run(
        [sys.executable, "-c", RUN.format(heavy=set(HEAVY)), "--url", NOWHERE, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return sorted({name.split(".")[0] for name in loaded})


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("functions", "--help"),
        ("invoke", "hello", "--input", "{}"),
        ("functions", "list"),
        ("executions", "get", "38eda13e", "--wait"),
        ("executions", "list"),
        ("executions", "log", "38eda13e", "-f"),
        ("invoke", "hello", "--follow"),
        ("versions", "list", "hello"),
    ],
    ids=" ".join,
)
def test_client_commands_load_no_server_modules(args: tuple[str, ...]) -> None:
    assert modules_loaded(*args) == []


def test_help_loads_no_http_client_either() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN.format(heavy={"httpx", "rich"}), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Usage: spinlet" in done.stdout
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []


def test_tokens_commands_do_load_the_store(tmp_path: object) -> None:
    """The check above can fail: the commands that work on a node's store do load it."""
    assert "sqlalchemy" in modules_loaded("tokens", "list", "--data-dir", str(tmp_path))


def test_the_token_commands_know_the_domain_roles() -> None:
    from spinlet.cli import tokens
    from spinlet.domain import DEFAULT_PROJECT, Role

    assert tuple(role.value for role in Role) == tokens.ROLES
    assert tokens.DEFAULT_PROJECT == DEFAULT_PROJECT
