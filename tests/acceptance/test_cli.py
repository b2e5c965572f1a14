"""The command line as people use it, against a real server (functions as processes): ids and
their prefixes, inputs, sizes, environment changes, waiting, errors, completion."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import Server, spinlet_bin, start_server, stop_server
from tests.acceptance.test_cli_releases import as_json, spinlet
from tests.conftest import FUNCTIONS, REPO

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
READS_ENV = """
import os

def main(event):
    return {name: os.environ.get(name) for name in event}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"), "process")
    spinlet(server, "functions", "create", "echo", str(FUNCTIONS / "echo.py"))
    spinlet(server, "functions", "create", "sleepy", str(FUNCTIONS / "sleep.py"))
    spinlet(server, "functions", "create", "fail", str(FUNCTIONS / "fail.py"))
    yield server
    stop_server(server)


def in_terminal(server: Server, command: str, columns: int) -> str:
    """What `spinlet …` shows in a terminal `columns` wide (a pseudo-terminal, via script)."""
    done = subprocess.run(
        ["script", "-qec", f"stty cols {columns} rows 50; {command}", "/dev/null"],
        cwd=REPO,
        env={**server.env(), "TERM": "xterm"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", done.stdout)  # without colours


def test_tables_show_whole_ids_in_a_terminal_and_in_a_pipe(server: Server) -> None:
    for i in range(3):
        spinlet(server, "invoke", "echo", "--input", str(i))
    ids = [e["id"] for e in as_json(server, "executions", "list", "--function", "echo")]
    piped = spinlet(server, "executions", "list", "--function", "echo").stdout
    shown = in_terminal(server, f"{spinlet_bin()} executions list --function echo", 150)
    narrow = in_terminal(server, f"{spinlet_bin()} functions list", 100)
    for output in (piped, shown):
        assert UUID.findall(output) == ids, output
    functions = as_json(server, "functions", "list")
    assert sorted(UUID.findall(narrow)) == sorted(f["id"] for f in functions), narrow
    assert all(len(line.rstrip("\r")) <= 150 for line in shown.splitlines())


def test_a_spinner_shows_in_a_terminal_when_a_wait_passes_a_second(server: Server) -> None:
    slow = f"{spinlet_bin()} invoke sleepy --input '{{\"seconds\": 2}}'"
    shown = in_terminal(server, slow, 120)
    assert "running sleepy" in shown and '{"slept": 2.0}' in shown
    assert "running" not in in_terminal(server, f"{spinlet_bin()} invoke echo --input 1", 120)
    assert "running" not in in_terminal(server, slow.replace("invoke", "--json invoke"), 120)
    piped = spinlet(server, "invoke", "sleepy", "--input", '{"seconds": 1.5}')
    assert (piped.stdout, piped.stderr) == ('{"slept": 1.5}\n', "")


def test_an_execution_is_found_by_a_unique_prefix(server: Server) -> None:
    record = as_json(server, "invoke", "echo", "--input", '{"find": "me"}')
    prefix = record["id"][:8]
    for command in (("executions", "get", prefix), ("executions", "get", prefix.upper())):
        assert as_json(server, *command)["id"] == record["id"]
    assert spinlet(server, "executions", "log", record["id"][:13]).returncode == 0
    # Without the hyphens too.
    assert (
        as_json(server, "executions", "get", record["id"][:13].replace("-", ""))["id"]
        == (record["id"])
    )


def test_an_ambiguous_prefix_names_the_candidates(server: Server) -> None:
    for i in range(20):  # 20 ids: some first hex digit is shared (pigeonhole)
        spinlet(server, "invoke", "echo", "--input", str(i))
    ids = [e["id"] for e in as_json(server, "executions", "list", "--limit", "1000")]
    first, count = collections.Counter(i[0] for i in ids).most_common(1)[0]
    assert count >= 2
    refused = spinlet(server, "executions", "get", first, ok=False)
    [line] = refused.stderr.splitlines()  # one line, however long (no terminal: no wrapping)
    assert line.startswith(f"error: '{first}' is the start of several execution ids: ")
    named = UUID.findall(line)
    assert len(named) == min(count, 10) and all(i.startswith(first) for i in named)
    unknown = spinlet(server, "executions", "get", "0000000", ok=False)
    assert unknown.stderr == "error: no execution has an id that starts with '0000000'\n"


def test_a_function_is_found_by_the_start_of_its_id(server: Server) -> None:
    function = as_json(server, "functions", "get", "echo")
    assert as_json(server, "functions", "get", function["id"][:8])["name"] == "echo"
    assert spinlet(server, "invoke", function["id"][:8], "--input", "7").stdout == "7\n"


def test_every_function_option_takes_the_start_of_an_id(server: Server) -> None:
    echo, fail = (as_json(server, "functions", "get", name) for name in ("echo", "fail"))
    alias = as_json(server, "aliases", "create", "pointer", echo["id"][:8])
    assert alias["function_id"] == echo["id"]
    moved = as_json(server, "aliases", "update", "pointer", "--function", fail["id"][:8])
    assert moved["function_id"] == fail["id"]
    listed = as_json(server, "aliases", "list", "--function", fail["id"][:8])
    assert [a["name"] for a in listed] == ["pointer"]
    assert as_json(server, "aliases", "list", "--function", echo["id"][:8]) == []
    spinlet(server, "aliases", "delete", "pointer")


def test_inputs_json_raw_file_and_stdin(server: Server, tmp_path: Path) -> None:
    refused = spinlet(server, "invoke", "echo", "--input", '{"a": 1,}', ok=False)
    assert refused.returncode == 2
    assert "not valid JSON" in refused.stderr and "--raw" in refused.stderr
    assert spinlet(server, "invoke", "echo", "--raw", "--input", "hi there").stdout == (
        '"hi there"\n'
    )
    # Larger than a command line may be (about 128 KiB an argument), under the API's 1 MiB.
    big = {"text": "x" * 600_000}
    event = tmp_path / "event.json"
    event.write_text(json.dumps(big))
    for args, stdin in ((("--input", f"@{event}"), None), (("--input", "-"), json.dumps(big))):
        done = spinlet(server, "--json", "invoke", "echo", *args, stdin=stdin)
        assert json.loads(done.stdout)["result"] == big
    missing = spinlet(server, "invoke", "echo", "--input", f"@{tmp_path / 'nope.json'}", ok=False)
    assert "cannot read" in missing.stderr


def test_sizes_take_units(server: Server) -> None:
    spinlet(server, "functions", "update", "echo", "--memory", "256Mi")
    assert as_json(server, "functions", "get", "echo")["memory_size"] == 256 * 1024**2
    spinlet(server, "functions", "update", "echo", "--memory", "1Gi")
    assert as_json(server, "functions", "get", "echo")["memory_size"] == 1024**3
    spinlet(server, "functions", "update", "echo", "--memory", "134217728")
    assert as_json(server, "functions", "get", "echo")["memory_size"] == 128 * 1024**2
    refused = spinlet(server, "functions", "update", "echo", "--memory", "lots", ok=False)
    assert "'lots' is not a size" in refused.stderr


def test_environment_variables_are_added_and_removed(server: Server, tmp_path: Path) -> None:
    code = tmp_path / "env.py"
    code.write_text(READS_ENV)
    spinlet(server, "functions", "create", "env", str(code), "--env", "A=1", "--env", "B=2")
    spinlet(server, "functions", "update", "env", "--env-add", "C=3", "--env-rm", "A")
    names = '["A", "B", "C"]'
    assert json.loads(spinlet(server, "invoke", "env", "--input", names).stdout) == {
        "A": None,
        "B": "2",
        "C": "3",
    }
    # --env replaces them all.
    spinlet(server, "functions", "update", "env", "--env", "D=4")
    assert as_json(server, "functions", "get", "env")["environment_keys"] == ["D"]
    refused = spinlet(server, "functions", "update", "env", "--env-add", "oops", ok=False)
    assert "'oops' is not KEY=VALUE" in refused.stderr


def test_waiting_ends_with_a_status_that_says_whether_it_finished(server: Server) -> None:
    execution = spinlet(server, "invoke", "sleepy", "--async", "--input", '{"seconds": 3}')
    execution_id = execution.stdout.strip()
    waited = spinlet(
        server, "executions", "get", execution_id, "--wait", "--timeout", "0.3", ok=False
    )
    assert waited.returncode == 3
    assert waited.stderr == f"execution {execution_id} is still running after 0.3 s\n"
    done = spinlet(server, "executions", "get", execution_id[:8], "--wait")
    duration = re.search(r"^\s*duration_ms\s+(\S+)\s*$", done.stdout, flags=re.MULTILINE)
    assert duration and re.fullmatch(r"\d+\.\d\d", duration[1]), done.stdout
    assert re.search(r"^\s*status\s+success\s*$", done.stdout, flags=re.MULTILINE)


def test_a_traceback_is_shown_as_text(server: Server) -> None:
    failed = spinlet(server, "invoke", "fail", "--input", '{"message": "boom"}', ok=False)
    assert "Traceback (most recent call last):\n" in failed.stderr
    execution_id = UUID.findall(failed.stderr)[0]
    shown = spinlet(server, "executions", "get", execution_id).stdout
    assert re.search(r"^\s*error\s+ValueError: boom\s*$", shown, flags=re.MULTILINE)
    assert "\nTraceback (most recent call last):\n" in shown and "\\n" not in shown
    assert shown.rstrip().endswith("ValueError: boom")


def test_a_failed_invoke_says_why_the_end_of_its_log_and_its_traceback(server: Server) -> None:
    failed = spinlet(server, "invoke", "fail", "--input", '{"message": "boom"}', ok=False)
    assert (failed.returncode, failed.stdout) == (1, "")
    execution_id = UUID.findall(failed.stderr)[0]
    traceback = as_json(server, "executions", "get", execution_id)["error"]["traceback"]
    assert traceback.endswith("ValueError: boom\n")
    assert failed.stderr == (
        f"execution {execution_id} failed (exception): ValueError: boom\n"
        f"--- log (spinlet executions log {execution_id}) ---\n"
        "about to fail\n" + traceback
    )
    # The log itself ends with the traceback; the command shows it once.
    log = spinlet(server, "executions", "log", execution_id).stdout
    assert log == "about to fail\n" + traceback
    # Machine-readable: the record on stdout, and still exit status 1.
    as_record = spinlet(server, "--json", "invoke", "fail", "--input", '"bad"', ok=False)
    assert (as_record.returncode, as_record.stderr) == (1, "")
    record = json.loads(as_record.stdout)
    assert (record["status"], record["error"]["message"]) == ("failed", "bad")


def test_a_failed_invoke_shows_the_last_lines_of_a_long_log(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "chatty.py"
    source.write_text(
        "def main(event):\n"
        "    for i in range(100):\n"
        "        print(f'step {i}')\n"
        "    raise RuntimeError('gave up')\n"
    )
    spinlet(server, "functions", "create", "chatty", str(source))
    failed = spinlet(server, "invoke", "chatty", ok=False)
    execution_id = UUID.findall(failed.stderr)[0]
    header, log_line, *shown = failed.stderr.splitlines()
    assert header == f"execution {execution_id} failed (exception): RuntimeError: gave up"
    assert log_line == f"--- log (last 20 of 100 lines, spinlet executions log {execution_id}) ---"
    assert shown[:20] == [f"step {i}" for i in range(80, 100)]
    assert shown[20] == "Traceback (most recent call last):"
    assert shown[-1] == "RuntimeError: gave up"


def test_a_bad_setting_is_one_line_and_a_traceback_only_with_debug(tmp_path: Path) -> None:
    env = {**os.environ, "SPINLET_WORKERS": "many", "SPINLET_DATA_DIR": str(tmp_path)}
    for args in (("serve", "--no-build"), ("tokens", "list"), ("--debug", "serve")):
        done = subprocess.run([spinlet_bin(), *args], env=env, capture_output=True, text=True)
        assert done.returncode == 1, args
        if "--debug" in args:
            assert "Traceback (most recent call last)" in done.stderr
        else:
            assert done.stderr == "error: SPINLET_WORKERS must be a number, not 'many'\n"


def complete(server: Server, words: str, url: str | None = None) -> list[str]:
    """What bash completion offers after `words` (the last word is the one completed)."""
    env = {
        "_SPINLET_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    if url is not None:
        env["SPINLET_URL"] = url
    done = spinlet(server, env=env)
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


def test_completion_of_commands_and_function_names(server: Server) -> None:
    assert complete(server, "spinlet exe") == ["executions"]
    assert complete(server, "spinlet invoke sl") == ["sleepy"]
    assert {"echo", "fail", "sleepy"} <= set(complete(server, "spinlet functions get "))
    # A node that does not answer: nothing offered, and no error.
    assert complete(server, "spinlet invoke sl", url="http://127.0.0.1:9") == []


def test_the_main_commands_have_examples_in_their_help(server: Server) -> None:
    for command in ("", "invoke", "functions", "functions create", "executions", "jobs", "serve"):
        shown = spinlet(server, *command.split(), "--help").stdout
        assert re.search(r"Examples:\n +spinlet ", shown), command


def test_a_runtime_is_registered_from_the_command_line(server: Server) -> None:
    """Through the API, as the other resource commands (on the process backend every image
    runs the node's own Python server: that passes the check)."""
    record = as_json(
        server, "runtimes", "create", "byo", "--image", "example/byo:1", "--description", "mine"
    )
    assert (record["name"], record["image"], record["description"]) == (
        "byo",
        "example/byo:1",
        "mine",
    )
    assert record["status"] == "available"
    listed = spinlet(server, "runtimes", "list").stdout
    assert "byo" in listed and "example/byo:1" in listed
    missing = spinlet(server, "runtimes", "create", "other", ok=False)
    assert "Missing option '--image'" in missing.stderr


@pytest.mark.docker
def test_an_image_that_is_no_runtime_is_refused_from_the_command_line(
    tmp_path: Path, docker_client: object
) -> None:
    from spinlet.runtime.images import BOOTSTRAP_BASE

    docker = start_server(tmp_path, "docker")
    try:
        done = spinlet(docker, "runtimes", "create", "bare", "--image", BOOTSTRAP_BASE, ok=False)
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line.startswith(f"error: image '{BOOTSTRAP_BASE}' is not a Spinlet runtime: ")
        assert "health: the runtime exits at once" in line
        assert "bare" not in spinlet(docker, "runtimes", "list").stdout
    finally:
        stop_server(docker)


def test_a_function_is_scaled_and_its_workers_listed_from_the_command_line(
    server: Server,
) -> None:
    said = spinlet(server, "functions", "scale-up", "echo", "--count", "2").stdout
    assert said == "2 provisioned container(s) kept\n"
    workers = as_json(server, "functions", "workers", "echo")
    assert len([w for w in workers if w["provisioned"]]) == 2
    assert all(w["worker_name"] and w["state"] == "idle" for w in workers)
    table = spinlet(server, "functions", "workers", "echo").stdout
    assert all(w["worker_name"] in table for w in workers)
    assert as_json(server, "invoke", "echo", "--input", "1")["start_kind"] == "warm"
    assert as_json(server, "functions", "scale-down", "echo")["count"] == 1
    assert spinlet(server, "functions", "detach", "echo").stdout.startswith("0 provisioned")
    assert [w for w in as_json(server, "functions", "workers", "echo") if w["provisioned"]] == []
    refused = spinlet(server, "functions", "scale-up", "echo", "--count", "0", ok=False)
    assert "--count" in refused.stderr
