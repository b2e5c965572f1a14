"""Following a log from the client's side: the SDK's `executions.follow`, `spinlet executions
log -f` and `spinlet invoke --follow`, against a fake node that holds the end of the log until
the test has seen the client show its start (so the order of events proves the streaming)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spinlet.client import ApiError, Client
from tests.fakenode import FakeNode, fake_node

TRACEBACK = 'Traceback (most recent call last):\n  File "fail.py", line 4\nValueError: boom\n'
#: The command, as installed beside this interpreter.
SPINLET = str(Path(sys.executable).parent / "spinlet")
FAILED = {
    "status": "failed",
    "status_reason": "exception",
    "error": {"type": "ValueError", "message": "boom", "traceback": TRACEBACK},
}


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with fake_node() as node:
        yield node


class Running:
    """`spinlet ARGS` against the fake node, its stdout a pipe read as it comes."""

    def __init__(self, node: FakeNode, tmp_path: Path, *args: str) -> None:
        self.stderr_path = tmp_path / "stderr"
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [SPINLET, "--url", node.url, *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def finish(self) -> tuple[str, str, int]:
        """The rest of stdout, all of stderr, the exit status."""
        assert self.process.stdout is not None
        with self.process.stdout:
            rest = self.process.stdout.read()
        status = self.process.wait(timeout=60)
        return rest, self.stderr_path.read_text(), status


def run(node: FakeNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SPINLET, "--url", node.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def follow_requests(node: FakeNode) -> list[dict[str, str]]:
    return [query for method, path, query in node.requests if path.endswith("/log")]


def test_the_sdk_yields_the_start_of_a_log_before_its_end(node: FakeNode) -> None:
    node.hold_after = 1
    with Client(node.url) as api:
        pieces = api.executions.follow(node.execution_id)
        first = next(pieces)
        node.note(f"the SDK yielded {first!r}")
        node.go_on.set()
        rest = list(pieces)
    assert [first, *rest] == ["tick 1\n", "tick 2\n"]
    assert node.events == [
        "sends b'tick 1\\n'",
        "the SDK yielded 'tick 1\\n'",
        "went on",
        "sends b'tick 2\\n'",
        "sends the end",
    ]
    assert follow_requests(node) == [{"follow": "true"}]


def test_the_sdk_joins_a_character_split_between_chunks(node: FakeNode) -> None:
    node.pieces = ["café ☕\n".encode()[:4], "café ☕\n".encode()[4:9], "café ☕\n".encode()[9:]]
    with Client(node.url) as api:
        assert "".join(api.executions.follow(node.execution_id)) == "café ☕\n"


def test_the_sdk_asks_for_timestamps(node: FakeNode) -> None:
    node.pieces = [b"2026-12-02T12:00:00.123456Z stdout tick 1\n"]
    with Client(node.url) as api:
        text = "".join(api.executions.follow(node.execution_id, timestamps=True))
    assert text == "2026-12-02T12:00:00.123456Z stdout tick 1\n"
    assert follow_requests(node) == [{"follow": "true", "timestamps": "true"}]


def test_following_an_unknown_execution_is_an_api_error(node: FakeNode) -> None:
    with Client(node.url) as api, pytest.raises(ApiError) as raised:
        list(api.executions.follow("00000000-0000-4000-8000-000000000000"))
    assert (raised.value.status, raised.value.code) == (404, "not_found")


def test_log_follow_prints_the_start_of_a_log_before_its_end(
    node: FakeNode, tmp_path: Path
) -> None:
    node.hold_after = 1
    cli = Running(node, tmp_path, "executions", "log", node.execution_id, "-f")
    first = cli.line()
    node.note(f"the CLI printed {first!r}")
    node.go_on.set()
    assert (first, *cli.finish()) == ("tick 1\n", "tick 2\n", "", 0)
    assert node.events == [
        "sends b'tick 1\\n'",
        "the CLI printed 'tick 1\\n'",
        "went on",
        "sends b'tick 2\\n'",
        "sends the end",
    ]


@pytest.mark.parametrize("status", ["success", "failed", "cancelled"])
def test_log_follow_exits_0_when_the_execution_ends_however_it_ended(
    node: FakeNode, status: str
) -> None:
    node.record = {**FAILED, "status": status}
    done = run(node, "executions", "log", node.execution_id, "--follow")
    assert (done.stdout, done.stderr, done.returncode) == ("tick 1\ntick 2\n", "", 0)
    assert follow_requests(node) == [{"follow": "true"}]


def test_a_log_cut_short_is_an_error(node: FakeNode) -> None:
    """The node went away before the end of the log: what came is shown, then why it stopped."""
    node.cut = True
    with Client(node.url) as api, pytest.raises(ConnectionResetError):
        list(api.executions.follow(node.execution_id))
    done = run(node, "executions", "log", node.execution_id, "-f")
    assert (done.stdout, done.returncode) == ("tick 1\ntick 2\n", 1)
    assert done.stderr == (
        f"error: cannot reach the Spinlet server at {node.url}: "
        "the connection closed before the end of the answer\n"
    )


def test_log_follow_with_timestamps_asks_for_them(node: FakeNode) -> None:
    node.pieces = [b"2026-12-02T12:00:00.123456Z stderr oops\n"]
    done = run(node, "executions", "log", node.execution_id, "-f", "--timestamps")
    assert (done.stdout, done.returncode) == ("2026-12-02T12:00:00.123456Z stderr oops\n", 0)
    assert follow_requests(node) == [{"follow": "true", "timestamps": "true"}]


def test_a_log_that_ends_before_its_execution_says_so(node: FakeNode) -> None:
    """A node drops a reader that falls too far behind: its log ends, the execution goes on."""
    node.record = {"status": "running"}
    done = run(node, "executions", "log", node.execution_id, "-f")
    assert (done.stdout, done.returncode) == ("tick 1\ntick 2\n", 3)
    assert f"the log of execution {node.execution_id} ended while it is still running" in (
        done.stderr
    )


def test_the_log_without_follow_is_asked_for_once(node: FakeNode) -> None:
    done = run(node, "executions", "log", node.execution_id)
    assert (done.stdout, done.returncode) == ("tick 1\ntick 2\n", 0)
    assert follow_requests(node) == [{}]


@pytest.mark.parametrize(
    "args",
    [("executions", "log", "X", "--timestamps"), ("--json", "executions", "log", "X", "-f")],
    ids=" ".join,
)
def test_log_options_that_do_not_go_together_are_refused(
    node: FakeNode, args: tuple[str, ...]
) -> None:
    done = run(node, *args)
    assert done.returncode == 2 and "Error:" in done.stderr
    assert node.requests == []


def test_log_follow_of_an_unknown_execution_is_one_line(node: FakeNode) -> None:
    done = run(node, "executions", "log", "00000000-0000-4000-8000-000000000000", "-f")
    assert (done.stdout, done.stderr) == ("", "error: execution not found (404 not_found)\n")
    assert done.returncode == 1


def test_invoke_follow_prints_the_log_as_it_comes_then_the_result(
    node: FakeNode, tmp_path: Path
) -> None:
    node.hold_after = 1
    cli = Running(node, tmp_path, "invoke", "ticker", "--follow", "--input", '{"ticks": 2}')
    first = cli.line()
    node.note(f"the CLI printed {first!r}")
    node.go_on.set()
    assert (first, *cli.finish()) == ("tick 1\n", 'tick 2\n{"ticks": 2}\n', "", 0)
    assert node.events[:3] == ["sends b'tick 1\\n'", "the CLI printed 'tick 1\\n'", "went on"]
    # Started asynchronously: the log is followed while it runs.
    assert node.created == [
        {"function_id": "ticker", "function_version": 0, "input": {"ticks": 2}, "sync": False}
    ]


def test_invoke_follow_of_a_failure_exits_1_with_the_error_after_the_log(
    node: FakeNode,
) -> None:
    """The log ends with the traceback: only the error's line follows it, on stderr."""
    node.pieces = [b"about to fail\n", TRACEBACK.encode()]
    node.record = FAILED
    done = run(node, "invoke", "fail", "--follow")
    assert done.stdout == "about to fail\n" + TRACEBACK
    assert done.stderr == f"execution {node.execution_id} failed (exception): ValueError: boom\n"
    assert done.returncode == 1


def test_invoke_follow_shows_a_traceback_its_log_did_not_end_with(node: FakeNode) -> None:
    node.pieces = [b"no newline at the end"]
    node.record = FAILED
    done = run(node, "invoke", "fail", "--follow")
    assert done.stdout == "no newline at the end\n"
    assert done.stderr == (
        f"execution {node.execution_id} failed (exception): ValueError: boom\n{TRACEBACK}"
    )
    assert done.returncode == 1


def test_invoke_follow_with_json_keeps_stdout_for_the_record(node: FakeNode) -> None:
    done = run(node, "--json", "invoke", "ticker", "--follow")
    assert json.loads(done.stdout)["result"] == {"ticks": 2}
    assert (done.stderr, done.returncode) == ("tick 1\ntick 2\n", 0)


def test_invoke_follow_waits_for_the_result_when_the_log_ends_first(node: FakeNode) -> None:
    node.record = {"status": "running"}
    cli = subprocess.Popen(
        [SPINLET, "--url", node.url, "invoke", "t", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert cli.stderr is not None
    said = cli.stderr.readline()
    assert said.startswith(f"the log of execution {node.execution_id} ended while it is still ")
    assert said.endswith("; waiting for its result\n")
    node.record = {"status": "success", "result": 7}
    stdout, _ = cli.communicate(timeout=60)
    assert (stdout, cli.returncode) == ("tick 1\ntick 2\n7\n", 0)


def test_ctrl_c_stops_following_not_the_execution(node: FakeNode, tmp_path: Path) -> None:
    node.hold_after = 1
    cli = Running(node, tmp_path, "invoke", "ticker", "--follow")
    assert cli.line() == "tick 1\n"
    cli.process.send_signal(signal.SIGINT)
    rest, stderr, status = cli.finish()
    assert (rest, status) == ("", 130)
    assert f"execution {node.execution_id} goes on" in stderr
    assert [method for method, _, _ in node.requests].count("POST") == 1  # and nothing else


@pytest.mark.parametrize("args", [("--async", "--follow")], ids=" ".join)
def test_invoke_async_and_follow_are_refused_together(
    node: FakeNode, args: tuple[str, ...]
) -> None:
    done = run(node, "invoke", "ticker", *args)
    assert done.returncode == 2 and "--async and --follow" in done.stderr
    assert node.requests == []
