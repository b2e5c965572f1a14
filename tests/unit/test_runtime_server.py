"""The Python runtime server (`runtimes/python/server.py`), driven over its Unix socket.

Each test starts the server as a subprocess, as the process driver does, and speaks runtime
protocol v1 to it with `http.client`.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "server.py"

Reply = tuple[int, dict[str, Any]]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        super().__init__("runtime", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Runtime:
    """A running server and one kept-open connection to it."""

    def __init__(self, socket_path: Path, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.socket_path = socket_path
        self.proc = proc
        self.conn = UnixHTTPConnection(socket_path)

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())

    def post(self, path: str, payload: Any) -> Reply:
        return self.request("POST", path, json.dumps(payload).encode())

    def health(self) -> Reply:
        return self.request("GET", "/health")

    def init(self, files: dict[str, str], entry: str = "main.main", **extra: Any) -> Reply:
        return self.post("/init", {"code": make_zip(files), "entry": entry, **extra})

    def run(self, event: Any = None, **extra: Any) -> Reply:
        payload = {
            "input": event,
            "execution_id": "ex-1",
            "deadline": time.time() + 30,
            "function_id": "fn-1",
            "function_name": "hello",
            "function_version": 3,
            **extra,
        }
        return self.post("/run", payload)

    def loaded(self, source: str, **extra: Any) -> Runtime:
        status, reply = self.init({"main.py": source}, **extra)
        assert status == 200, reply
        return self


def make_zip(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[Callable[[], Runtime]]:
    procs: list[subprocess.Popen[bytes]] = []
    runtimes: list[Runtime] = []

    def start() -> Runtime:
        directory = tmp_path / f"rt{len(procs)}"
        (directory / "tmp").mkdir(parents=True)
        socket_path = directory / "sock" / "rt.sock"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SPINLET_SOCKET": str(socket_path),
            "TMPDIR": str(directory / "tmp"),
        }
        proc = subprocess.Popen(
            [sys.executable, str(SERVER)], env=env, cwd=directory, start_new_session=True
        )
        procs.append(proc)
        wait_for_socket(socket_path, proc)
        runtime = Runtime(socket_path, proc)
        runtimes.append(runtime)
        return runtime

    yield start
    for runtime in runtimes:
        runtime.conn.close()
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def runtime(start_runtime: Callable[[], Runtime]) -> Runtime:
    return start_runtime()


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the runtime server exited"
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                time.sleep(0.005)
    raise AssertionError("the runtime server did not listen in time")


HELLO = """
def main(event, context):
    return {"hello": event["name"], "execution": context.execution_id}
"""


def test_health_before_and_after_init(runtime: Runtime) -> None:
    """`protocol` stays 1 for old nodes; `protocols` lists what the server speaks."""
    known = {"protocol": 1, "protocols": [1, 2], "features": ["code_dir", "layer_dir"]}
    assert runtime.health() == (200, {**known, "initialized": False})
    runtime.loaded(HELLO)
    assert runtime.health() == (200, {**known, "initialized": True})


def test_socket_is_connectable_by_other_users(runtime: Runtime) -> None:
    assert runtime.socket_path.stat().st_mode & 0o777 == 0o666


def test_init_reply(runtime: Runtime) -> None:
    status, reply = runtime.init({"main.py": HELLO})
    assert status == 200
    assert reply["protocol"] == 1
    assert reply["init_ms"] >= 0
    assert reply["logs"] == ""


def test_run_with_context(runtime: Runtime) -> None:
    status, reply = runtime.loaded(HELLO).run({"name": "ada"}, execution_id="ex-42")
    assert status == 200
    assert reply["result"] == {"hello": "ada", "execution": "ex-42"}
    assert reply["logs"] == ""
    assert reply["duration_ms"] >= 0
    assert "error" not in reply


def test_run_without_context(runtime: Runtime) -> None:
    runtime.loaded("def main(event):\n    return event * 2\n")
    assert runtime.run(21)[1]["result"] == 42


def test_dotted_entry_module(runtime: Runtime) -> None:
    files = {"pkg/__init__.py": "", "pkg/mod.py": "def handle(event):\n    return 'deep'\n"}
    assert runtime.init(files, entry="pkg.mod.handle")[0] == 200
    assert runtime.run()[1]["result"] == "deep"


def test_namespace_package_entry(runtime: Runtime) -> None:
    files = {"handlers/api.py": "def handle(event):\n    return 'namespace'\n"}
    assert runtime.init(files, entry="handlers.api.handle")[0] == 200
    assert runtime.run()[1]["result"] == "namespace"


def test_context_attributes(runtime: Runtime) -> None:
    runtime.loaded(
        """
def main(event, context):
    return {
        "function_id": context.function_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "deadline": context.deadline,
        "remaining": context.remaining_time(),
    }
"""
    )
    deadline = time.time() + 30
    result = runtime.run(deadline=deadline)[1]["result"]
    assert result["function_id"] == "fn-1"
    assert result["function_name"] == "hello"
    assert result["function_version"] == 3
    assert result["deadline"] == deadline
    assert 0 < result["remaining"] <= 30


def test_state_is_kept_between_runs(runtime: Runtime) -> None:
    runtime.loaded(
        "calls = 0\ndef main(event):\n    global calls\n    calls += 1\n    return calls\n"
    )
    assert [runtime.run()[1]["result"] for _ in range(3)] == [1, 2, 3]


def test_all_output_lands_in_logs_in_order(runtime: Runtime) -> None:
    runtime.loaded(
        """
import os, subprocess, sys

def main(event, context):
    print("one")
    sys.stderr.write("two\\n")
    os.write(1, b"three\\n")
    subprocess.run(["echo", "four"], check=True)
    os.write(2, b"five\\n")
    context.logger.info("six")
    print("seven", end="")
    return None
"""
    )
    status, reply = runtime.run()
    assert status == 200
    lines = reply["logs"].splitlines()
    assert lines[:5] == ["one", "two", "three", "four", "five"]
    assert lines[5].endswith("INFO six")
    assert lines[6] == "seven"
    assert reply["result"] is None


def test_logs_belong_to_their_execution(runtime: Runtime) -> None:
    runtime.loaded("def main(event):\n    print(event)\n")
    assert runtime.run("first")[1]["logs"] == "first\n"
    assert runtime.run("second")[1]["logs"] == "second\n"


def test_import_time_output_is_init_logs(runtime: Runtime) -> None:
    status, reply = runtime.init({"main.py": "print('loading')\ndef main(event):\n    pass\n"})
    assert status == 200
    assert reply["logs"] == "loading\n"


def test_exception_is_an_error(runtime: Runtime) -> None:
    runtime.loaded(
        """
def helper(value):
    raise ValueError(f"bad value {value}")

def main(event):
    print("before")
    helper(event)
"""
    )
    status, reply = runtime.run(7)
    assert status == 200
    assert "result" not in reply
    error = reply["error"]
    assert error["type"] == "ValueError"
    assert error["message"] == "bad value 7"
    assert error["traceback"].startswith("Traceback (most recent call last):")
    assert 'main.py", line 3, in helper' in error["traceback"]
    assert "server.py" not in error["traceback"]
    assert reply["logs"] == "before\n" + error["traceback"]  # as the log's last lines


def test_system_exit_is_an_error_not_a_crash(runtime: Runtime) -> None:
    runtime.loaded("import sys\ndef main(event):\n    sys.exit(3)\n")
    assert runtime.run()[1]["error"]["type"] == "SystemExit"
    assert runtime.health()[0] == 200


def test_unserialisable_result(runtime: Runtime) -> None:
    runtime.loaded("def main(event):\n    return {1, 2} if event else float('nan')\n")
    for event in (True, False):
        status, reply = runtime.run(event)
        assert status == 200
        assert reply["error"]["type"] == "ResultNotSerializable"
        assert "result" not in reply
    assert runtime.health()[0] == 200


def test_run_before_init(runtime: Runtime) -> None:
    status, reply = runtime.run()
    assert status == 409
    assert reply["error"]["type"] == "NotInitialized"


def test_second_init_is_refused(runtime: Runtime) -> None:
    runtime.loaded(HELLO)
    status, reply = runtime.init({"main.py": HELLO})
    assert status == 409
    assert reply["error"]["type"] == "AlreadyInitialized"


def test_init_after_a_failed_init_is_refused(runtime: Runtime) -> None:
    assert runtime.init({"other.py": ""})[0] == 400
    assert runtime.init({"main.py": HELLO})[0] == 409
    assert runtime.run()[0] == 409


def test_missing_module(runtime: Runtime) -> None:
    status, reply = runtime.init({"other.py": HELLO})
    assert status == 400
    assert reply["error"]["type"] == "ModuleNotFoundError"
    assert "'main'" in reply["error"]["message"]
    assert runtime.health()[1]["initialized"] is False


def test_missing_dependency_of_the_module(runtime: Runtime) -> None:
    status, reply = runtime.init({"main.py": "import not_installed_anywhere\n"})
    assert status == 400
    assert reply["error"]["type"] == "ModuleNotFoundError"
    assert reply["error"]["message"] == "No module named 'not_installed_anywhere'"
    assert 'main.py", line 1' in reply["error"]["traceback"]


def test_missing_function(runtime: Runtime) -> None:
    status, reply = runtime.init({"main.py": "def handler(event):\n    pass\n"})
    assert status == 400
    assert reply["error"]["type"] == "EntryNotFound"
    assert "'main'" in reply["error"]["message"]


def test_malformed_entry(runtime: Runtime) -> None:
    status, reply = runtime.init({"main.py": HELLO}, entry="main")
    assert status == 400
    assert reply["error"]["type"] == "InvalidEntry"


def test_shadowed_module_name(runtime: Runtime) -> None:
    status, reply = runtime.init({"json.py": "def main(event):\n    pass\n"}, entry="json.main")
    assert status == 400
    assert reply["error"]["type"] == "EntryNotFound"
    assert "shadowed" in reply["error"]["message"]


def test_import_time_exception(runtime: Runtime) -> None:
    status, reply = runtime.init({"main.py": "print('starting')\n1 / 0\n"})
    assert status == 400
    assert reply["error"]["type"] == "ZeroDivisionError"
    assert reply["error"]["message"] == "division by zero"
    assert 'main.py", line 2' in reply["error"]["traceback"]
    assert "importlib" not in reply["error"]["traceback"]
    assert reply["logs"] == "starting\n" + reply["error"]["traceback"]


def test_syntax_error(runtime: Runtime) -> None:
    status, reply = runtime.init({"main.py": "def main(event)\n    pass\n"})
    assert status == 400
    assert reply["error"]["type"] == "SyntaxError"


def test_environment_is_visible(runtime: Runtime) -> None:
    runtime.loaded(
        "import os\nAT_IMPORT = os.environ['GREETING']\n"
        "def main(event):\n    return [AT_IMPORT, os.environ['GREETING']]\n",
        environment={"GREETING": "hi"},
    )
    assert runtime.run()[1]["result"] == ["hi", "hi"]


def test_a_traceback_starts_a_line_of_its_own(runtime: Runtime) -> None:
    runtime.loaded("def main(event):\n    print('no newline', end='')\n    raise KeyError(event)\n")
    reply = runtime.run("k")[1]
    assert reply["logs"] == "no newline\n" + reply["error"]["traceback"]
    assert reply["logs"].endswith("KeyError: 'k'\n")


def test_a_long_log_keeps_its_head_and_its_tail_at_line_boundaries(runtime: Runtime) -> None:
    runtime.loaded(
        "def main(event):\n    for i in range(1000):\n        print(f'line {i:03}')\n",
        log_limit=100,
    )
    logs = runtime.run()[1]["logs"]
    # 9 bytes a line: 5 whole lines in each half of 50 bytes.
    head = "".join(f"line {i:03}\n" for i in range(5))
    tail = "".join(f"line {i:03}\n" for i in range(995, 1000))
    assert logs == f"{head}\n[spinlet: log truncated, {9000 - 90} bytes dropped]\n{tail}"


def test_a_single_line_longer_than_the_limit_keeps_both_ends(runtime: Runtime) -> None:
    runtime.loaded("def main(event):\n    print('a' + 'x' * 98 + 'z')\n", log_limit=10)
    logs = runtime.run()[1]["logs"]
    assert logs == "axxxx\n[spinlet: log truncated, 91 bytes dropped]\nxxxz\n"


def test_a_traceback_counts_within_the_limit_and_ends_the_log(runtime: Runtime) -> None:
    runtime.loaded(
        "import os\ndef main(event):\n"
        "    for i in range(20000):\n        print(f'step {i}')\n"
        "    os.write(1, b'last words\\n')\n"
        "    raise RuntimeError('gave up')\n",
        log_limit=1000,
    )
    reply = runtime.run()[1]
    traceback = reply["error"]["traceback"]
    cut = re.fullmatch(
        r"(.*)\n\[spinlet: log truncated, (\d+) bytes dropped\]\n(.*)", reply["logs"], re.DOTALL
    )
    assert cut is not None
    head, dropped, tail = cut[1].encode(), int(cut[2]), cut[3].encode()
    assert head.startswith(b"step 0\nstep 1\n") and head.endswith(b"\n")
    assert tail.endswith(b"\nlast words\n" + traceback.encode())
    assert len(head) + len(tail) <= 1000
    printed = sum(len(f"step {i}\n") for i in range(20000)) + len(b"last words\n")
    assert len(head) + dropped + len(tail) == printed + len(traceback.encode())


def test_large_output_is_drained(runtime: Runtime) -> None:
    runtime.loaded("import os\ndef main(event):\n    os.write(1, b'y' * 500_000)\n    return 1\n")
    reply = runtime.run()[1]
    assert reply["result"] == 1
    assert len(reply["logs"]) == 500_000


def test_background_child_does_not_hold_up_the_reply(runtime: Runtime) -> None:
    runtime.loaded(
        "import subprocess\ndef main(event):\n"
        "    subprocess.Popen(['sh', '-c', 'echo early; sleep 5'])\n    return 'done'\n"
    )
    started = time.monotonic()
    reply = runtime.run()[1]
    assert time.monotonic() - started < 2
    assert reply["result"] == "done"
    assert runtime.health()[0] == 200


def test_runs_after_a_background_child_still_get_their_own_output(runtime: Runtime) -> None:
    # The child keeps the first run's pipe open: later runs are drained apart from it.
    runtime.loaded(
        "import subprocess, sys\ndef main(event):\n"
        "    if event == 'spawn':\n"
        "        subprocess.Popen(['sh', '-c', 'sleep 0.5; echo late; sleep 3'])\n"
        "    print('run', event)\n    return event\n"
    )
    assert runtime.run("spawn")[1]["logs"] == "run spawn\n"
    for event in ("one", "two"):
        assert runtime.run(event)[1]["logs"] == f"run {event}\n"
    time.sleep(0.7)  # the child writes to the first run's pipe, which nobody keeps now
    assert runtime.run("three")[1]["logs"] == "run three\n"


def raw_exchange(runtime: Runtime, data: bytes) -> tuple[bytes, bool]:
    """Send `data` on a new connection: the response, and whether the server then closed."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(runtime.socket_path))
        sock.sendall(data)
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(65536)
        head, _, body = response.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        return head + b"\r\n\r\n" + body, closed


@pytest.mark.parametrize(
    ("request_bytes", "status", "closes"),
    [
        (b"GET /health HTTP/1.1\r\nHost: rt\r\n\r\n", b"200", False),
        (b"GET /health HTTP/1.1\r\nconnection: Close\r\n\r\n", b"200", True),
        (b"GET /health HTTP/1.0\r\n\r\n", b"200", True),
        (b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b"200", False),
        (b"GET /health HTTP/2.0\r\n\r\n", b"400", True),
        (b"GET /health\r\n\r\n", b"400", True),
        (b"GET /health HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", b"431", True),
        (b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", b"431", True),
    ],
)
def test_request_lines_and_headers(
    runtime: Runtime, request_bytes: bytes, status: bytes, closes: bool
) -> None:
    response, closed = raw_exchange(runtime, request_bytes)
    assert response.startswith(b"HTTP/1.1 " + status), response[:200]
    assert json.loads(response.partition(b"\r\n\r\n")[2])  # a JSON body, errors too
    assert closed is closes
    assert runtime.health()[0] == 200


def test_header_names_are_case_insensitive(runtime: Runtime) -> None:
    body = json.dumps({"input": 1, "execution_id": "e"}).encode()
    runtime.loaded("def main(event):\n    return event + 1\n")
    runtime.conn.close()  # the server serves one connection at a time
    response, _ = raw_exchange(
        runtime, b"POST /run HTTP/1.1\r\ncontent-LENGTH: %d\r\n\r\n%s" % (len(body), body)
    )
    assert response.startswith(b"HTTP/1.1 200")
    assert json.loads(response.partition(b"\r\n\r\n")[2])["result"] == 2


@pytest.mark.parametrize("name", ["../evil.py", "/abs.py", "a/../../evil.py"])
def test_zip_escaping_the_package_is_refused(runtime: Runtime, name: str) -> None:
    status, reply = runtime.init({name: "x = 1\n", "main.py": HELLO})
    assert status == 400
    assert reply["error"]["type"] == "InvalidPackage"
    assert name in reply["error"]["message"]


def test_code_that_is_not_a_zip(runtime: Runtime) -> None:
    status, reply = runtime.post("/init", {"code": base64.b64encode(b"nope").decode()})
    assert status == 400
    assert reply["error"]["type"] == "InvalidPackage"


def test_a_code_dir_is_imported_in_place(runtime: Runtime, tmp_path: Path) -> None:
    """A runtime that announces `code_dir` imports from the directory the node filled."""
    code_dir = tmp_path / "filled" / "code"
    (code_dir / "pkg").mkdir(parents=True)
    (code_dir / "pkg" / "__init__.py").write_text("")
    (code_dir / "pkg" / "handler.py").write_text("def main(event):\n    return __file__\n")
    status, reply = runtime.post("/init", {"code_dir": str(code_dir), "entry": "pkg.handler.main"})
    assert status == 200, reply
    assert runtime.run()[1]["result"] == str(code_dir / "pkg" / "handler.py")


def test_a_missing_code_dir_is_an_invalid_package(runtime: Runtime, tmp_path: Path) -> None:
    status, reply = runtime.post("/init", {"code_dir": str(tmp_path / "absent")})
    assert status == 400
    assert reply["error"]["type"] == "InvalidPackage"
    assert "does not exist" in reply["error"]["message"]


def test_a_layer_dir_comes_after_the_code_and_before_the_image(
    runtime: Runtime, tmp_path: Path
) -> None:
    """The function's dependencies are importable; its own module of the same name wins over
    a dependency's, and a dependency wins over the image's (the standard library's) own."""
    code_dir, layer_dir = tmp_path / "filled" / "code", tmp_path / "filled" / "layer"
    (layer_dir / "dependency").mkdir(parents=True)
    (layer_dir / "dependency" / "__init__.py").write_text("WHERE = 'layer'\n")
    (layer_dir / "shared.py").write_text("WHERE = 'layer'\n")
    (layer_dir / "colorsys.py").write_text("WHERE = 'layer'\n")
    code_dir.mkdir()
    (code_dir / "shared.py").write_text("WHERE = 'code'\n")
    (code_dir / "main.py").write_text(
        "import sys, colorsys, dependency, shared\n"
        "def main(event):\n"
        "    return [dependency.WHERE, shared.WHERE, colorsys.WHERE, sys.path[:2]]\n"
    )
    body = {"code_dir": str(code_dir), "layer_dir": str(layer_dir)}
    status, reply = runtime.post("/init", body)
    assert status == 200, reply
    assert runtime.run()[1]["result"] == [
        "layer",
        "code",
        "layer",
        [str(code_dir), str(layer_dir)],
    ]


def test_a_missing_layer_dir_is_refused_at_init(runtime: Runtime, tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    body = {"code_dir": str(tmp_path / "code"), "layer_dir": str(tmp_path / "absent")}
    status, reply = runtime.post("/init", body)
    assert status == 400
    assert reply["error"]["type"] == "InvalidLayer"
    assert "does not exist" in reply["error"]["message"]


def test_code_is_extracted_under_tmpdir(runtime: Runtime) -> None:
    runtime.loaded("import os\ndef main(event):\n    return os.path.dirname(__file__)\n")
    code_dir = Path(runtime.run()[1]["result"])
    assert code_dir.parent == runtime.socket_path.parent.parent / "tmp"


def test_keep_alive(runtime: Runtime) -> None:
    runtime.loaded(HELLO)
    sock = runtime.conn.sock
    for _ in range(5):
        assert runtime.health()[0] == 200
        assert runtime.run({"name": "x"})[0] == 200
    assert runtime.conn.sock is sock


def load_server_module() -> Any:
    spec = importlib.util.spec_from_file_location("spinlet_runtime_server", SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingWriter:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /health HTTP/1.1\r\n\r\n", b"200"),
        (b"POST /run HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", b"409"),
        (b"POST /init HTTP/1.1\r\nContent-Length: 1\r\n\r\n{", b"400"),
        (b"BREW /pot HTTP/1.1\r\n\r\n", b"501"),
    ],
)
def test_each_response_is_one_write(request_bytes: bytes, status: bytes) -> None:
    server = load_server_module()
    handler = server.RequestHandler.__new__(server.RequestHandler)
    handler.server = types.SimpleNamespace(runtime=server.Runtime())
    handler.rfile = io.BytesIO(request_bytes)
    handler.wfile = RecordingWriter()
    handler.close_connection = True
    handler.handle_one_request()
    [written] = handler.wfile.writes
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status)
    assert f"Content-Length: {len(body)}".encode() in head
    assert isinstance(json.loads(body), dict)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"code": 5}',
        b"\xff\xfe",
        b"",
        b"{}",
        b'{"code_dir": "relative/dir"}',
        b'{"code_dir": "/d", "code": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}',
        b'{"code_dir": "/d", "layer_dir": "relative/dir"}',
        b'{"code_dir": "/d", "layer_dir": 5}',
    ],
)
def test_bad_init_body(runtime: Runtime, body: bytes) -> None:
    status, reply = runtime.request("POST", "/init", body)
    assert status == 400
    assert reply["error"]["type"] == "BadRequest"
    assert runtime.health()[0] == 200
    assert runtime.init({"main.py": HELLO})[0] == 200  # a refused request did not count


def test_bad_run_body(runtime: Runtime) -> None:
    runtime.loaded(HELLO)
    assert runtime.request("POST", "/run", b"{oops")[0] == 400
    assert runtime.run(deadline="soon")[0] == 400
    assert runtime.run({"name": "ok"})[0] == 200


def test_unknown_path_and_method(runtime: Runtime) -> None:
    assert runtime.request("GET", "/nope")[0] == 404
    assert runtime.request("GET", "/run")[0] == 405
    status, reply = runtime.request("DELETE", "/health")
    assert status == 501
    assert reply["error"]["type"] == "NotImplemented"
    runtime.conn.close()  # the server closes after a protocol-level error
    assert runtime.health()[0] == 200


def test_garbage_on_the_wire_does_not_kill_the_server(runtime: Runtime) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(runtime.socket_path))
        sock.sendall(b"\x00\x01 garbage\r\n\r\n")
        assert b"400" in sock.recv(65536)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(runtime.socket_path))
        sock.sendall(b"POST /init HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # then hang up
    assert runtime.health()[0] == 200


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def test_stale_socket_is_replaced(start_runtime: Callable[[], Runtime], tmp_path: Path) -> None:
    first = start_runtime()
    assert first.health()[0] == 200
    # A second server on the same path (the first one's socket file is "stale" to it).
    env = {"PATH": os.environ.get("PATH", ""), "SPINLET_SOCKET": str(first.socket_path)}
    stale = first.socket_path.stat().st_ino
    proc = subprocess.Popen([sys.executable, str(SERVER)], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        # Until the second server made a socket of its own (it unlinks the stale one first).
        while inode(first.socket_path) in (stale, None):
            assert proc.poll() is None, "the second server ended"
            assert time.monotonic() < deadline, "the second server never replaced the socket"
            time.sleep(0.02)
        assert proc.poll() is None
        fresh = Runtime(first.socket_path)
        assert fresh.health()[1]["initialized"] is False
        fresh.conn.close()
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_ends_the_server_even_inside_the_function(runtime: Runtime) -> None:
    runtime.loaded("import time\ndef main(event):\n    time.sleep(30)\n")
    assert runtime.proc is not None
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(runtime.socket_path))
        body = json.dumps({"input": None, "execution_id": "x"}).encode()
        sock.sendall(b"POST /run HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.2)
        runtime.proc.send_signal(signal.SIGTERM)
        assert runtime.proc.wait(timeout=5) == 128 + signal.SIGTERM
    assert not runtime.socket_path.exists()


# --- protocol v2: /run streams its output --------------------------------------------------------

Frame = dict[str, Any]


class WireClient:
    """The node's side of protocol v2, on one kept-open connection: JSON replies with a
    `Content-Length`, and `/run` replies as chunked JSON lines ("frames"), read as they arrive.

    Reads time out (a test fails rather than hangs when a frame never comes)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(socket_path))
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, method: str, path: str, payload: Any = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n"
        self.sock.sendall(head.encode() + body)

    def read_head(self) -> tuple[int, dict[str, str]]:
        status = int(self.file.readline().split()[1])
        headers = {}
        while (line := self.file.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        return status, headers

    def request(self, method: str, path: str, payload: Any = None) -> Reply:
        self.send(method, path, payload)
        status, headers = self.read_head()
        assert headers["content-type"] == "application/json"
        return status, json.loads(self.file.read(int(headers["content-length"])))

    def init(self, source: str, **extra: Any) -> Reply:
        return self.request("POST", "/init", {"code": make_zip({"main.py": source}), **extra})

    def run(self, event: Any = None) -> Iterator[Frame]:
        """Send a `/run`; its frames, each as soon as its chunk has arrived."""
        self.send("POST", "/run", {"input": event, "execution_id": "ex-2"})
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        status, headers = self.read_head()
        assert status == 200
        assert headers["content-type"] == "application/x-ndjson"
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
        return read_frames(self.file)


def read_frames(body: io.BufferedIOBase) -> Iterator[Frame]:
    """The frames of a chunked body, each as soon as its chunk is read."""
    while size := int(body.readline(), 16):
        data = body.read(size)
        assert body.read(2) == b"\r\n"
        assert data.endswith(b"\n")  # whole frames in a chunk
        for line in data.splitlines():
            yield json.loads(line)
    assert body.readline() == b"\r\n"  # the body's end, then the next response


class Streamed:
    """The frames of one v2 `/run` reply, checked: log frames, then the result frame last."""

    def __init__(self, frames: list[Frame]) -> None:
        *logs, self.result = frames
        assert self.result["type"] == "result"
        for frame in logs:
            assert set(frame) == {"type", "stream", "data", "t"}
            assert frame["type"] == "log" and frame["stream"] in ("stdout", "stderr")
            assert frame["data"] and isinstance(frame["t"], float)
        self.logs = logs

    def text(self, stream: str | None = None) -> str:
        """The log as the node writes it down: both streams in the order they came, or one."""
        return "".join(f["data"] for f in self.logs if stream in (None, f["stream"]))


def run_past_gate(
    client: WireClient, gate: Gate, *awaited: tuple[str, str], word: bytes = b"go"
) -> Streamed:
    """Run the function (which waits on `gate`), read frames until each `(stream, text)` in
    `awaited` has arrived, then open the gate: the frames of the whole run."""
    frames = client.run(str(gate.path))
    seen: list[Frame] = []
    for stream, text in awaited:
        while text not in "".join(f["data"] for f in seen if f.get("stream") == stream):
            frame = next(frames)
            assert frame["type"] == "log", f"the run ended without {text!r} on {stream}"
            seen.append(frame)
    gate.open(word)  # the function is still waiting: what was awaited came first
    return Streamed(seen + list(frames))


class AnyNumber:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and other >= 0


ANY_NUMBER = AnyNumber()


class Gate:
    """A Unix socket a function waits on (`WAIT_FOR_GATE`) until the test opens it: the test
    sees what arrives while the function still runs, by the order of events, no timer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.settimeout(10)
        self.listener.bind(str(path))
        self.listener.listen()

    def open(self, word: bytes = b"go") -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.sendall(word)


WAIT_FOR_GATE = """
import socket

def wait_for_gate(path):
    with socket.socket(socket.AF_UNIX) as gate:
        gate.connect(path)
        return gate.recv(100).decode()
"""


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    opened = Gate(tmp_path / "gate.sock")
    yield opened
    opened.listener.close()


@pytest.fixture
def start_v2(start_runtime: Callable[[], Runtime]) -> Iterator[Callable[[str], WireClient]]:
    """Start a server and load `source` into it over a connection that agreed on v2."""
    clients: list[WireClient] = []

    def start(source: str) -> WireClient:
        client = WireClient(start_runtime().socket_path)
        clients.append(client)
        status, reply = client.init(source, protocol=2)
        assert (status, reply["protocol"]) == (200, 2), reply
        return client

    yield start
    for client in clients:
        client.close()


def stream_run(client: WireClient, event: Any = None) -> Streamed:
    return Streamed(list(client.run(event)))


@pytest.mark.parametrize(("asked", "agreed"), [(None, 1), (1, 1), (2, 2), (3, 2)])
def test_init_agrees_on_the_highest_protocol_both_speak(
    runtime: Runtime, asked: int | None, agreed: int
) -> None:
    extra = {} if asked is None else {"protocol": asked}
    status, reply = runtime.init({"main.py": HELLO}, **extra)
    assert (status, reply["protocol"]) == (200, agreed)


@pytest.mark.parametrize("protocol", ["2", 0, True, 1.5])
def test_a_protocol_that_is_not_a_version_is_refused(runtime: Runtime, protocol: Any) -> None:
    status, reply = runtime.init({"main.py": HELLO}, protocol=protocol)
    assert status == 400
    assert reply["error"]["type"] == "BadRequest"
    assert runtime.init({"main.py": HELLO}, protocol=2)[1]["protocol"] == 2


def test_a_node_that_asks_for_no_protocol_gets_v1_replies(runtime: Runtime) -> None:
    client = WireClient(runtime.socket_path)
    try:
        assert client.init("def main(event):\n    print('hi')\n    return 1\n")[1]["protocol"] == 1
        assert client.request("POST", "/run", {"input": None}) == (
            200,
            {"result": 1, "logs": "hi\n", "duration_ms": pytest.approx(0, abs=1000)},
        )
    finally:
        client.close()


def test_output_arrives_while_the_function_runs(
    start_v2: Callable[[str], WireClient], gate: Gate
) -> None:
    client = start_v2(
        WAIT_FOR_GATE + "def main(event):\n"
        "    print('waiting for the gate')\n"
        "    return wait_for_gate(event)\n"
    )
    streamed = run_past_gate(client, gate, ("stdout", "waiting for the gate\n"), word=b"opened")
    assert streamed.text() == "waiting for the gate\n"
    assert streamed.result == {"type": "result", "result": "opened", "duration_ms": ANY_NUMBER}


def test_frames_keep_their_stream(start_v2: Callable[[str], WireClient]) -> None:
    client = start_v2(
        """
import os, subprocess, sys

def main(event, context):
    print("one")
    sys.stderr.write("two\\n")
    os.write(1, b"three\\n")
    os.write(2, b"four\\n")
    subprocess.run(["sh", "-c", "echo five; echo six >&2"], check=True)
    context.logger.info("seven")
    print("eight", end="")
"""
    )
    streamed = stream_run(client)
    assert streamed.text("stdout") == "one\nthree\nfive\neight"
    stderr = streamed.text("stderr").splitlines()
    assert stderr[:3] == ["two", "four", "six"]
    assert stderr[3].endswith("INFO seven")
    assert len(stderr) == 4
    assert streamed.result["result"] is None


def test_a_child_process_output_arrives_while_the_function_runs(
    start_v2: Callable[[str], WireClient], gate: Gate
) -> None:
    client = start_v2(
        WAIT_FOR_GATE + "import subprocess\n"
        "def main(event):\n"
        "    child = subprocess.Popen(['sh', '-c', 'echo from the child; echo child error >&2'])\n"
        "    wait_for_gate(event)\n"
        "    return child.wait()\n"
    )
    streamed = run_past_gate(
        client, gate, ("stdout", "from the child\n"), ("stderr", "child error\n")
    )
    assert streamed.text("stdout") == "from the child\n"
    assert streamed.text("stderr") == "child error\n"
    assert streamed.result["result"] == 0


def test_a_character_split_between_two_reads_is_decoded_whole(
    start_v2: Callable[[str], WireClient], gate: Gate
) -> None:
    client = start_v2(
        WAIT_FOR_GATE + "import os\n"
        "def main(event):\n"
        "    os.write(1, 'café'.encode()[:-1])\n"  # the first byte of 'é'
        "    wait_for_gate(event)\n"
        "    os.write(1, 'é!'.encode()[1:])\n"
    )
    streamed = run_past_gate(client, gate, ("stdout", "caf"))  # read, with half a character
    assert streamed.text("stdout") == "café!"


def test_an_unfinished_character_at_the_end_is_replaced(
    start_v2: Callable[[str], WireClient],
) -> None:
    client = start_v2("import os\ndef main(event):\n    os.write(2, 'end é'.encode()[:-1])\n")
    assert stream_run(client).text("stderr") == "end \N{REPLACEMENT CHARACTER}"


def test_a_big_output_arrives_whole_and_in_order(start_v2: Callable[[str], WireClient]) -> None:
    client = start_v2(
        "import os, sys\n"
        "def main(event):\n"
        "    for i in range(event):\n"
        "        os.write(1, b'%07d ' % i + b'x' * 56 + b'\\n')\n"
        "        if i % 1000 == 0:\n"
        "            sys.stderr.write(f'progress {i}\\n')\n"
        "    return event\n"
    )
    lines = 100_000  # 6.4 MB
    frames = list(client.run(lines))
    streamed = Streamed(frames)
    expected = "".join(f"{i:07d} " + "x" * 56 + "\n" for i in range(lines))
    assert streamed.text("stdout") == expected
    assert streamed.text("stderr") == "".join(f"progress {i}\n" for i in range(0, lines, 1000))
    assert streamed.result["result"] == lines
    assert max(len(f["data"]) for f in streamed.logs) <= 65536  # a frame per read


def test_a_traceback_is_the_last_stderr_frame(start_v2: Callable[[str], WireClient]) -> None:
    client = start_v2(
        "def main(event):\n"
        "    print('before', end='' if event else '\\n')\n"
        "    raise ValueError('bad value')\n"
    )
    for line_ended in (True, False):
        streamed = stream_run(client, not line_ended)
        error = streamed.result["error"]
        assert error["type"] == "ValueError"
        assert error["traceback"].startswith("Traceback (most recent call last):")
        last = streamed.logs[-1]
        assert last["stream"] == "stderr"
        assert last["data"] == ("" if line_ended else "\n") + error["traceback"]
        assert streamed.text() == "before\n" + error["traceback"]  # on a line of its own
        assert set(streamed.result) == {"type", "error", "duration_ms"}  # no `logs`


def test_an_unserialisable_result_is_an_error_without_traceback(
    start_v2: Callable[[str], WireClient],
) -> None:
    client = start_v2("def main(event):\n    return {1, 2}\n")
    streamed = stream_run(client)
    assert streamed.logs == []
    assert streamed.result["error"]["type"] == "ResultNotSerializable"


def test_the_connection_serves_the_next_requests(start_v2: Callable[[str], WireClient]) -> None:
    client = start_v2("def main(event):\n    print('run', event)\n    return event\n")
    for event in range(3):
        streamed = stream_run(client, event)
        assert (streamed.text(), streamed.result["result"]) == (f"run {event}\n", event)
        assert client.request("GET", "/health")[1]["initialized"] is True
    assert client.request("POST", "/run", {"deadline": "soon"})[0] == 400  # refused as JSON
    assert stream_run(client, 3).result["result"] == 3


def test_a_background_child_holding_the_pipes_neither_holds_up_the_reply_nor_leaks_into_the_next(
    start_v2: Callable[[str], WireClient], tmp_path: Path
) -> None:
    """The child writes while the next run runs (that run releases it and waits for it)."""
    release, written = tmp_path / "release", tmp_path / "written"
    os.mkfifo(release)
    os.mkfifo(written)
    client = start_v2(
        f"""
import subprocess

def main(event):
    if event == "spawn":
        subprocess.Popen(["sh", "-c", "read x < {release}; echo late; echo done > {written}"])
    elif event == "release":
        with open("{release}", "w") as fifo:
            fifo.write("go\\n")
        with open("{written}") as fifo:
            fifo.read()
    print("run", event)
    return event
"""
    )
    assert stream_run(client, "spawn").text() == "run spawn\n"  # the child still holds its pipes
    assert stream_run(client, "release").text() == "run release\n"  # "late" was written meanwhile
    assert stream_run(client, "after").text() == "run after\n"


def test_a_node_that_hangs_up_during_a_run_leaves_the_server_usable(
    start_v2: Callable[[str], WireClient], gate: Gate
) -> None:
    client = start_v2(
        WAIT_FOR_GATE + "def main(event):\n"
        "    print('first')\n"
        "    wait_for_gate(event)\n"
        "    for i in range(10_000):\n"
        "        print('after the hang-up', i)\n"
        "    return 'done'\n"
    )
    frames = client.run(str(gate.path))
    assert next(frames)["data"].startswith("first")
    client.close()
    gate.open()
    again = WireClient(client.socket_path)  # served once the server is done with the first
    try:
        assert again.request("GET", "/health")[1]["initialized"] is True
        assert stream_run(again, "no gate").result["error"]["type"] == "FileNotFoundError"
    finally:
        again.close()


class UnstartedDrainer:
    """A drainer that does not get to its runs before they end."""

    def drain(self, capture: Any) -> None:
        pass


def test_a_run_that_ends_before_its_drainer_starts_is_read_by_the_request_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """...and pipes a background child holds do not hold up the run's end."""
    server = load_server_module()
    monkeypatch.setattr(server.PipeCapture, "_drainer", UnstartedDrainer())
    sent = RecordingWriter()
    frames = server.FrameWriter(sent.write, b"")
    release = tmp_path / "release"
    os.mkfifo(release)
    with server.StreamCapture(frames):
        os.write(1, b"out\n")
        os.write(2, b"err\n")
        child = subprocess.Popen(["sh", "-c", f"read x < {release}; echo late; echo late >&2"])
    with open(release, "w") as fifo:  # the capture has ended: the child writes after it
        fifo.write("go\n")
    assert child.wait() == 0
    frames.finish('{"type": "result", "result": null, "duration_ms": 0.1}', "")
    streamed = Streamed(list(read_frames(io.BytesIO(b"".join(sent.writes)))))
    assert (streamed.text("stdout"), streamed.text("stderr")) == ("out\n", "err\n")
