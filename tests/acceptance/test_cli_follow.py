"""Following a log with the command line against a real node (functions as processes): a
function that waits for a file of the test's own to appear shows that the command printed the
start of the log while the execution still ran. (These need the node's side, `?follow=true`.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import Server, spinlet_bin, start_server, stop_server
from tests.acceptance.test_cli_releases import as_json, spinlet
from tests.conftest import REPO

#: Prints a line, waits until the file `go_on` exists, prints another and returns.
GATED = """
import os
import time


def main(event):
    print("waiting", flush=True)
    while not os.path.exists(event["go_on"]):
        time.sleep(0.02)
    print("went on", flush=True)
    if event.get("fail"):
        raise ValueError("after all")
    return "done"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"), "process")
    code = tmp_path_factory.mktemp("code") / "gated.py"
    code.write_text(GATED)
    # A client that never shows the first line fails within the timeout, never hangs.
    spinlet(server, "functions", "create", "gated", str(code), "--timeout", "20")
    yield server
    stop_server(server)


def follow(server: Server, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """`spinlet ARGS` with its stdout a pipe, read as it comes; its stderr in a file."""
    with open(tmp_path / "stderr", "w") as stderr:
        return subprocess.Popen(
            [spinlet_bin(), *args],
            cwd=REPO,
            env=server.env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def rest(process: subprocess.Popen[str]) -> tuple[str, int]:
    assert process.stdout is not None
    with process.stdout:
        text = process.stdout.read()
    return text, process.wait(timeout=60)


def test_log_follow_prints_a_line_while_the_execution_runs(server: Server, tmp_path: Path) -> None:
    go_on = tmp_path / "go-on"
    started = spinlet(server, "invoke", "gated", "--async", "--input", f'{{"go_on": "{go_on}"}}')
    execution_id = started.stdout.strip()
    cli = follow(server, tmp_path, "executions", "log", execution_id[:8], "-f")
    assert cli.stdout is not None
    assert cli.stdout.readline() == "waiting\n"
    # Shown while the execution waits for this test: it cannot have ended yet.
    assert as_json(server, "executions", "get", execution_id)["status"] == "running"
    go_on.touch()
    assert rest(cli) == ("went on\n", 0)
    assert as_json(server, "executions", "get", execution_id)["status"] == "success"


def test_invoke_follow_prints_the_log_as_it_comes_then_the_result(
    server: Server, tmp_path: Path
) -> None:
    go_on = tmp_path / "go-on"
    event = f'{{"go_on": "{go_on}"}}'
    cli = follow(server, tmp_path, "invoke", "gated", "--follow", "--input", event)
    assert cli.stdout is not None
    assert cli.stdout.readline() == "waiting\n"
    go_on.touch()
    assert rest(cli) == ('went on\n"done"\n', 0)
    assert (tmp_path / "stderr").read_text() == ""


def test_invoke_follow_of_a_failure_exits_1_after_its_log(server: Server, tmp_path: Path) -> None:
    go_on = tmp_path / "go-on"
    go_on.touch()
    event = f'{{"go_on": "{go_on}", "fail": true}}'
    cli = follow(server, tmp_path, "invoke", "gated", "--follow", "--input", event)
    shown, status = rest(cli)
    assert status == 1
    assert shown.startswith("waiting\nwent on\nTraceback (most recent call last):\n")
    assert shown.endswith("ValueError: after all\n")
    [line] = (tmp_path / "stderr").read_text().splitlines()  # the traceback was in the log
    assert line.endswith(" failed (exception): ValueError: after all")
