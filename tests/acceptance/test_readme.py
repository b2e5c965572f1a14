"""Every example in the README's "Using Spinlet" section runs, in order, against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Server, free_port, start_server, stop_server
from tests.conftest import REPO

README_URL = "http://127.0.0.1:7070"


def readme_examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- examples:start -->", 1)[1].split("<!-- examples:end -->", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(readme_examples()) >= 4


def run_example(
    block: str, server: Server, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a README block against `server` (in place of the README's address); it must succeed."""
    script = "set -euo pipefail\n" + block.replace(README_URL, server.url)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"README example failed:\n{block}\n--- stdout\n{done.stdout}\n--- stderr\n"
        f"{done.stderr}\n--- server log\n{server.log()[-3000:]}"
    )
    return done


def test_readme_examples_run(docker_server: Server) -> None:
    outputs, errors = [], []
    for block in readme_examples():
        done = run_example(block, docker_server)
        outputs.append(done.stdout)
        errors.append(done.stderr)
    deploy, inspect, http, sdk, later = outputs[:5]
    assert '{"hello": "world"}' in deploy
    assert "fail exited with status 1" in deploy
    # Why it failed, on stderr: the error, the end of its log, then the traceback.
    assert "failed (exception): ValueError: boom\n--- log (" in errors[0]
    assert "about to fail\nTraceback (most recent call last):\n" in errors[0]
    assert errors[0].rstrip().endswith("ValueError: boom")
    assert "success" in inspect and "[1, 2, 3]" in inspect
    assert '"fib.main"' in http
    assert "12586269025" in http  # fib(50)
    assert '"code": "not_found"' in http
    assert "success {'slept': 0.2}" in sdk
    assert '{"data":{"slept":1.0}}' in later  # the answer as written, no spaces
    assert "cancelled" in later and "deleted 0 execution(s)" in later

    blocks = readme_examples()
    release = outputs[next(i for i, b in enumerate(blocks) if "versions publish" in b)]
    assert "greeter version 1" in release and "greeter version 2" in release
    # Through the alias: version 1, the promoted version 2, then version 1 again (rolled back).
    assert re.findall(r'\{"greeting": "(\w+), Ada!"\}', release) == ["Hello", "Howdy", "Hello"]
    # The canary: 20 executions, each of version 1 or 2 (`uniq -c` lines).
    split = re.findall(r"^\s*(\d+) ([12])$", release, flags=re.MULTILINE)
    assert sum(int(count) for count, _ in split) == 20
    follow = outputs[next(i for i, b in enumerate(blocks) if "--follow" in b)]
    ticks = "tick 1 of 3\ntick 2 of 3\ntick 3 of 3\n"
    assert f'\n{ticks}{{"ticks": 3}}\n' in follow, follow  # the log, then the result
    # Followed with times while it ran: its last line at least was written after `-f` began.
    assert re.search(r"^\d{4}-\d\d-\d\dT[\d:.]+Z stdout tick 3 of 3$", follow, re.M), follow
    # Then the same execution once ended, and a third one followed over HTTP.
    assert follow.endswith(ticks + "tick 1 of 2\ntick 2 of 2\n"), follow
    scaled = outputs[next(i for i, b in enumerate(blocks) if "scale-up" in b)]
    assert "2 provisioned container(s) kept" in scaled and "\nwarm\n" in scaled, scaled
    assert "0 provisioned container(s) kept" in scaled, scaled
    deps = outputs[next(i for i, b in enumerate(blocks) if "functions/deps" in b)]
    pins = re.search(r'\{"status":"available","dependencies":(\[[^]]*\])\}', deps)
    assert pins is not None, deps
    assert '"orjson==' in pins.group(1) and '"pyyaml==' in pins.group(1)
    assert '"loader": "CLoader"' in deps and '"json": "{\\"primes\\":[2,3,5]}"' in deps
    assert deps.count(pins.group(1)) == 2  # the version pins the same set
    assert "refused: status 1" in deps and "build failed: status 1" in deps
    assert deps.rstrip().endswith("error")
    cli = outputs[next(i for i, b in enumerate(blocks) if "--raw" in b)]
    assert '{"from": "a file"}' in cli and '{"from": "stdin"}' in cli
    assert '"a plain string"' in cli and "invalid JSON: status 2" in cli
    assert "still running: status 3" in cli and re.search(r"status +success", cli)
    env = outputs[next(i for i, b in enumerate(blocks) if "--env-add" in b)]
    assert '{"concurrency":2,"environment_keys":["API_TOKEN","MODE"]}' in env
    assert '{"environment_keys":["API_TOKEN","LEVEL"]}' in env


def readme_block(marker: str) -> str:
    """The one shell block between `<!-- marker:start -->` and `<!-- marker:end -->`."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"<!-- {marker}:start -->", 1)[1].split(f"<!-- {marker}:end -->")[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return block


def test_readme_webhook_example_runs(tmp_path: Path) -> None:
    """The example of "Webhooks": a signed call to an http-mode webhook is answered by the
    function, an unsigned one is a 401, and an async webhook queues an execution, all with curl
    and no token (functions as processes)."""
    server = start_server(tmp_path, "process")
    try:
        done = run_example(readme_block("webhooks"), server)
    finally:
        stop_server(server)
    lines = done.stdout.splitlines()
    signed = lines.index('{"received": "opened"}')
    assert lines[signed + 1] == "401", done.stdout
    assert re.fullmatch(r'\{"execution_id":"[0-9a-f-]{36}"\}', lines[-1]), done.stdout


@pytest.mark.docker
def test_readme_nodejs_example_runs(docker_server: Server) -> None:
    """The Node.js example of "Runtimes": functions/hello-node deployed and invoked with the CLI."""
    # The block builds the image when it is missing (the node would build it on first use).
    done = run_example(readme_block("nodejs"), docker_server, timeout=600)
    lines = done.stdout.splitlines()
    assert '{"greeting":"hello Node","node":"v20."}' in lines, done.stdout
    assert re.search(r"^ *status +success", done.stdout, re.MULTILINE), done.stdout
    assert "hello async from hello-node v0" in lines, done.stdout


def run_servers_script(
    script: str, home: Path, ports: list[str], **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a README script that starts `spinlet serve` on `ports` in the background, with
    `home` as HOME; then stop those servers (and wait until they are gone)."""
    environment = {
        **os.environ,
        "HOME": str(home),
        "SPINLET_STEM_CELLS": "0",
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        **env,
    }
    environment.pop("SPINLET_TOKEN", None)
    try:
        return subprocess.run(
            ["timeout", "120", "bash", "-c", "set -euo pipefail\n" + script],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
        )
    finally:
        for port in ports:
            subprocess.run(["pkill", "-INT", "-f", f"spinlet serve .*--port {port} "])
        for port in ports:
            for _ in range(100):
                if subprocess.run(["pgrep", "-f", f"spinlet serve .*--port {port} "]).returncode:
                    break
                time.sleep(0.2)


def test_readme_production_example_runs_two_nodes(tmp_path: Path, fresh_postgres: str) -> None:
    """The "several nodes" example, on a fresh database, free ports and a temporary home."""
    block = readme_block("production")
    ports = [str(free_port()), str(free_port())]
    script = (
        block.replace("$(bash deploy/ensure-postgres.sh)", f"'{fresh_postgres}'")
        .replace("--port 707$n", '--port "${ports[$n]}"')
        .replace("127.0.0.1:7071", f"127.0.0.1:{ports[0]}")
        .replace("127.0.0.1:7072", f"127.0.0.1:{ports[1]}")
    )
    done = run_servers_script(f"ports=(0 {ports[0]} {ports[1]})\n{script}", tmp_path, ports)
    logs = "".join(p.read_text() for p in tmp_path.glob(".spinlet-node-*.log"))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs[-3000:]}"
    assert done.stdout.strip().endswith('{"greeting": "Hello, node 2!"}'), done.stdout


@pytest.mark.docker
def test_readme_security_example_requires_tokens(tmp_path: Path, docker_client: Any) -> None:
    """The "security model" example: a node on every address, tokens, two projects."""
    port = str(free_port())
    script = readme_block("security").replace("7080", port)
    done = run_servers_script(script, tmp_path, [port], SPINLET_NODE_ID=f"readme-{port}")
    log = (tmp_path / ".spinlet-shared.log").read_text()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log[-3000:]}"
    lines = [line.strip() for line in done.stdout.splitlines()]
    expected = ["unauthorized", '{"greeting": "Hello, acme!"}', "not_found", "acme", "0"]
    assert [line for line in lines if line in expected] == expected, done.stdout
    # The tokens listed by name, the one made over HTTP too.
    assert all(name in done.stdout for name in ("ops", "ci", "deploy")), done.stdout
    assert "API tokens required" in log
    assert "spl_" not in log


def test_readme_trigger_examples_run(tmp_path: Path) -> None:
    """The "Triggers" examples (a cron job, a scheduled execution), on a node of their own
    (functions as processes)."""
    server = start_server(tmp_path, "process")
    try:
        cron = run_example(readme_block("triggers-cron"), server).stdout
        scheduled = run_example(readme_block("triggers-schedule"), server).stdout
    finally:
        stop_server(server)
    assert '["job","job"]\npaused\nrunning\n' in cron, cron
    lines = scheduled.splitlines()
    assert lines[0] == "scheduled", scheduled
    assert lines[1] == '{"status":"success","result":"later"}', scheduled
    assert lines[2].endswith(" cancelled"), scheduled
    assert "sync: false" in lines[3], scheduled
