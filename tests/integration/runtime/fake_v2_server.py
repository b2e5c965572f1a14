"""A runtime server speaking protocol v2 (streamed `/run`) on its own, for the node's tests.

Standard library only, started by the process driver in place of the real server. It loads no
code: each `/run` input is a script of what to send, so a test controls the order of events.

- `frames`: `[stream, text]` log frames sent first, each in two chunks (a frame split across
  chunks), then flushed;
- `gate`: a FIFO to open (blocking) before going on: the test opens its other end when it has
  seen what it waits for;
- `after`: frames sent after the gate, several in one chunk;
- `end`: `"result"` (default: a result frame with `result`), `"error"` (a traceback frame on
  stderr, then a result frame with an error), or `"block"` (nothing more, ever).

An `/init` offering `protocol` 2 or more is answered with protocol 2, else with 1; with 1, `/run`
answers as protocol v1 does (one JSON body, the frames' text as `logs`).
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

INIT_LOGS = "imported\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    agreed = 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._reply({"protocol": 1, "protocols": [1, 2], "features": ["code_dir", "layer_dir"]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        if self.path == "/init":
            offered = body.get("protocol", 1)
            Handler.agreed = 2 if isinstance(offered, int) and offered >= 2 else 1
            self._reply({"protocol": Handler.agreed, "init_ms": 1.0, "logs": INIT_LOGS})
        elif Handler.agreed == 1:
            self._run_v1(body.get("input") or {})
        else:
            self._run_v2(body.get("input") or {})

    def _run_v1(self, script: dict[str, Any]) -> None:
        frames = script.get("frames", []) + script.get("after", [])
        self._reply({"result": script.get("result"), "logs": "".join(t for _, t in frames)})

    def _run_v2(self, script: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for stream, text in script.get("frames", []):
            line = _frame(stream, text)
            self._chunk(line[:5])
            self._chunk(line[5:])
        if gate := script.get("gate"):
            with open(gate, "rb") as fifo:
                fifo.read()
        self._chunk(b"".join(_frame(stream, text) for stream, text in script.get("after", [])))
        end = script.get("end", "result")
        if end == "block":
            threading.Event().wait()
        if end == "error":
            self._chunk(_frame("stderr", "Traceback (most recent call last):\nValueError: boom\n"))
            error = {"type": "ValueError", "message": "boom", "traceback": "Traceback\n"}
            result: dict[str, Any] = {"type": "result", "error": error, "duration_ms": 2.0}
        else:
            result = {"type": "result", "result": script.get("result"), "duration_ms": 2.0}
        self._chunk(json.dumps(result).encode() + b"\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _frame(stream: str, text: str) -> bytes:
    frame = {"type": "log", "stream": stream, "data": text, "t": time.time()}
    return json.dumps(frame).encode() + b"\n"


class Server(socketserver.UnixStreamServer):
    def get_request(self) -> tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("runtime", 0)  # BaseHTTPRequestHandler wants a (host, port)


if __name__ == "__main__":
    Server(os.environ["SPINLET_SOCKET"], Handler).serve_forever()
