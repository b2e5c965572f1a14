"""`spinlet versions …` and `spinlet aliases …` against a real server (functions as processes)."""

from __future__ import annotations

import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Server, spinlet_bin, start_server, stop_server
from tests.conftest import FUNCTIONS, REPO


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"), "process")
    yield server
    stop_server(server)


def spinlet(
    server: Server,
    *args: str,
    ok: bool = True,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `spinlet ARGS` as a user would, against `server` (and assert its exit status)."""
    done = subprocess.run(
        [spinlet_bin(), *args],
        cwd=REPO,
        env={**server.env(), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode == 0) == ok, (
        f"spinlet {' '.join(args)}: exit status {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done


def as_json(server: Server, *args: str) -> Any:
    return json.loads(spinlet(server, "--json", *args).stdout)


def test_versions_commands(server: Server, tmp_path: Path) -> None:
    spinlet(server, "functions", "create", "cli-shop", str(FUNCTIONS / "hello.py"))
    assert spinlet(server, "versions", "publish", "cli-shop").stdout == "cli-shop version 1\n"
    # Unchanged: the same version again.
    assert spinlet(server, "versions", "publish", "cli-shop").stdout == "cli-shop version 1\n"
    spinlet(server, "functions", "update", "cli-shop", "--timeout", "9")
    second = as_json(server, "versions", "publish", "cli-shop", "--description", "slower")
    assert (second["version_number"], second["timeout"]) == (2, 9)
    listed = as_json(server, "versions", "list", "cli-shop")
    assert [(v["version_number"], v["description"]) for v in listed] == [(1, None), (2, "slower")]
    assert "slower" in spinlet(server, "versions", "list", "cli-shop").stdout
    assert as_json(server, "versions", "get", "cli-shop", "1")["timeout"] == 60

    target = tmp_path / "v1.zip"
    spinlet(server, "versions", "get", "cli-shop", "1", "--download", str(target))
    with zipfile.ZipFile(target) as archive:
        assert archive.namelist() == ["hello.py"]

    spinlet(server, "aliases", "create", "cli-live", "cli-shop", "--version", "2")
    refused = spinlet(server, "versions", "delete", "cli-shop", "2", ok=False)
    assert refused.stderr.startswith("error: version 2 of function 'cli-shop' is used by alias")
    assert "Traceback" not in refused.stderr
    spinlet(server, "aliases", "delete", "cli-live")
    spinlet(server, "versions", "delete", "cli-shop", "2")
    assert [v["version_number"] for v in as_json(server, "versions", "list", "cli-shop")] == [1]
    spinlet(server, "functions", "delete", "cli-shop")


def test_aliases_commands(server: Server) -> None:
    spinlet(server, "functions", "create", "cli-echo", str(FUNCTIONS / "echo.py"))
    spinlet(server, "versions", "publish", "cli-echo")
    spinlet(server, "functions", "update", "cli-echo", "--description", "changed", "--cpu", "500")
    spinlet(server, "versions", "publish", "cli-echo")

    created = as_json(
        server,
        *("aliases", "create", "cli-stable", "cli-echo", "--version", "1"),
        *("--canary-version", "2", "--canary-weight", "0.1", "--description", "prod"),
    )
    assert (created["function_version"], created["routing"]) == (1, {"version": 2, "weight": 0.1})
    # Only the weight: the canary's version stays.
    ramped = as_json(server, "aliases", "update", "cli-stable", "--canary-weight", "0.5")
    assert ramped["routing"] == {"version": 2, "weight": 0.5}
    assert ramped["description"] == "prod"
    stopped = as_json(server, "aliases", "update", "cli-stable", "--no-canary")
    assert stopped["routing"] is None and stopped["function_version"] == 1
    shown = spinlet(server, "aliases", "get", "cli-stable").stdout
    assert "cli-stable" in shown and "prod" in shown
    table = spinlet(server, "aliases", "list", "--function", "cli-echo").stdout
    assert "cli-stable" in table

    through = as_json(server, "invoke", "cli-echo", "--alias", "cli-stable", "--input", "[7]")
    assert (through["result"], through["function_version"]) == ([7], 1)
    assert through["function_alias"] == "cli-stable"
    by_version = as_json(server, "invoke", "cli-echo", "--version", "2", "--input", "[8]")
    assert (by_version["result"], by_version["function_version"]) == ([8], 2)

    bad = spinlet(
        server,
        "aliases",
        "update",
        "cli-stable",
        "--canary-version",
        "2",
        "--canary-weight",
        "1",
        ok=False,
    )
    assert "between 0 and 1" in bad.stderr
    missing = spinlet(server, "aliases", "update", "cli-stable", "--version", "9", ok=False)
    assert "version 9 of function 'cli-echo' not found" in missing.stderr
    refused = spinlet(server, "functions", "delete", "cli-echo", ok=False)
    assert "alias 'cli-stable'" in refused.stderr
    spinlet(server, "aliases", "delete", "cli-stable")
    assert as_json(server, "aliases", "list") == []
    spinlet(server, "functions", "delete", "cli-echo")


def test_function_settings_from_the_cli(server: Server) -> None:
    hello = str(FUNCTIONS / "hello.py")
    created = as_json(
        server, "functions", "create", "cli-set", hello, "--network", "--memory", "67108864"
    )
    assert (created["network"], created["memory_size"]) == (True, 64 * 1024 * 1024)
    updated = as_json(server, "functions", "update", "cli-set", "--no-network", "--cpu", "500")
    assert (updated["network"], updated["cpu"], updated["memory_size"]) == (False, 500, 67108864)
