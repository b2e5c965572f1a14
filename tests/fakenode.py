"""A stand-in for a node, for the client's side of following a log (the SDK and the CLI): it
answers the few requests that takes, sends a followed log as chunks, and holds the rest of it
until the test lets it go on, so a test can tell what the client did before the log ended."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENDED = ("success", "failed", "cancelled")
#: How long a held log waits for the test before it goes on anyway (a client that buffers what
#: it receives never shows the first piece: the test then fails instead of hanging).
HOLD = 20.0


class FakeNode:
    """The execution `execution_id`: its log in `pieces`, sent as chunks, and its `record`,
    as `GET /v1/executions/ID` answers once the log has ended. `events` is the order in which
    things happened, told by the node (`sends …`, before it does) and by the test (`note`)."""

    def __init__(self) -> None:
        self.execution_id = str(uuid.uuid4())
        self.pieces: list[bytes] = [b"tick 1\n", b"tick 2\n"]
        #: After how many pieces the log waits for `go_on` (None: it never waits).
        self.hold_after: int | None = None
        #: Whether the log stops without its end, the connection closed (a node that went away).
        self.cut = False
        self.go_on = threading.Event()
        self.record: dict[str, Any] = {"status": "success", "result": {"ticks": 2}}
        self.events: list[str] = []
        #: What each request asked: its method, path and query.
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.created: list[dict[str, Any]] = []
        self.url = ""

    def note(self, event: str) -> None:
        self.events.append(event)

    def full_record(self) -> dict[str, Any]:
        return {
            "id": self.execution_id,
            "status_reason": None,
            "error": None,
            "result": None,
            **self.record,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test's output is the client's."""

    def do_GET(self) -> None:
        node = self.server.node
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        node.requests.append(("GET", url.path, query))
        executions = "/v1/executions/"
        ref = url.path.removeprefix(executions).removesuffix("/log")
        if not url.path.startswith(executions) or ref != node.execution_id:
            self._json(404, {"error": {"code": "not_found", "message": "execution not found"}})
        elif not url.path.endswith("/log"):
            # A long poll: answers when the record ends (a test may end it meanwhile) or when
            # its wait is over.
            until = time.monotonic() + float(query.get("wait", 0))
            record = node.full_record()
            while record["status"] not in ENDED and time.monotonic() < until:
                time.sleep(0.01)
                record = node.full_record()
            self._json(200, record)
        elif query.get("follow") == "true":
            self._follow(node)
        else:
            self._send(200, "text/plain; charset=utf-8", b"".join(node.pieces))

    def do_POST(self) -> None:
        node = self.server.node
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        node.requests.append(("POST", self.path, {}))
        node.created.append(body)
        self._json(201, {**node.full_record(), "status": "queued", "result": None})

    def _follow(self, node: FakeNode) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for number, piece in enumerate(node.pieces):
            if number == node.hold_after:
                node.note("went on" if node.go_on.wait(HOLD) else "gave up waiting")
            node.note(f"sends {piece!r}")  # before: the client may have it at once
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        if node.cut:
            self.close_connection = True
            return
        node.note("sends the end")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, status: int, body: Any) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, node: FakeNode) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.node = node


@contextmanager
def fake_node() -> Iterator[FakeNode]:
    node = FakeNode()
    server = _Server(node)
    node.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield node
    finally:
        node.go_on.set()
        server.shutdown()
        server.server_close()
        thread.join()
