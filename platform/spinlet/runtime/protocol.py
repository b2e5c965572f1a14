"""Client side of the runtime protocol (see `runtimes/README.md`), spoken over a Unix socket.

One `RuntimeConnection` per container, opened when the container starts and kept open for its
whole life: the warm path is one HTTP request on an already-connected socket. A failure to talk
to the server at all (refused, reset, closed mid-reply) is `ContainerGone`, so that the pool can
ask the driver what happened to the container; a reply that breaks the protocol is a
`RuntimeBackendError` (a platform fault). A runtime that speaks another version of the protocol
(an image built for another release of Spinlet) is found at `/init`, whose reply carries the
version: `RuntimeProtocolMismatch`, before any execution runs on it.

Versions are negotiated at `/init`: the node offers the highest it speaks (`MAX_PROTOCOL`) and
the runtime answers with the one it will use. With version 2, `/run` answers with a chunked
stream of JSON lines, log frames as the function writes and a result frame last, which `run`
reads as they come (`_FrameReader`), handing each log frame to its `on_log`; with version 1 it
answers with one JSON body, the whole log in it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinlet.domain import ExecutionError
from spinlet.errors import RuntimeBackendError, RuntimeProtocolMismatch
from spinlet.offloop import off_loop_if_big

#: The version of the runtime protocol every runtime speaks (`runtimes/README.md`); the runtime
#: image carries it in its `spinlet.runtime.protocol` label (`images.PROTOCOL_LABEL`).
PROTOCOL_VERSION = 1
#: The version whose `/run` streams the function's output as frames, then its result.
STREAMING_PROTOCOL = 2
#: The highest version this node speaks: what it offers at `/init`.
MAX_PROTOCOL = STREAMING_PROTOCOL
#: The largest frame of a streamed `/run` (a log frame holds one read of a pipe, 64 KiB before
#: JSON escapes; the result frame holds the result): a longer line breaks the protocol.
MAX_FRAME = 64 * 1024 * 1024
#: How much of a chunk is read at a time: a frame is handed on as soon as it is complete.
READ_SIZE = 64 * 1024

#: Called with each log frame of a streamed `/run`: stream (`stdout`, `stderr`), text, and the
#: unix time the runtime read it.
LogCallback = Callable[[str, str, float], None]

#: The `/health` feature of a runtime whose `/init` takes a directory filled by the node.
CODE_DIR_FEATURE = "code_dir"
#: The `/health` feature of a runtime whose `/init` also takes a dependency layer directory.
LAYER_DIR_FEATURE = "layer_dir"


class ContainerGone(Exception):
    """The runtime server cannot be reached: its container exited, was killed or is not up."""


class ContainerUnreachable(ContainerGone):
    """No connection could be made, so the request was not sent (safe to send elsewhere)."""


@dataclass(frozen=True)
class InitReply:
    """The answer to `POST /init`; `error` is set when the code could not be loaded."""

    init_ms: float
    logs: str
    error: dict[str, str] | None = None
    protocol: int = PROTOCOL_VERSION  # the version agreed: the one `/run` is answered in

    @property
    def ok(self) -> bool:
        return self.error is None


class RuntimeConnection:
    """A kept-open HTTP/1.1 connection to one runtime server's Unix socket.

    A minimal client for our own server (which answers with a `Content-Length` and in one write,
    but for a streamed `/run`): the warm path is one write and two reads on an already-connected
    socket, about a third cheaper than a general-purpose client session. One request at a time.
    Reading a streamed answer costs the v1 path nothing measurable: `run` against a v1 runtime,
    1000 calls alternating with the code before streaming, p50s within 2% either way (184 µs
    against 191, 190 against 186, over four runs).
    """

    def __init__(self, socket_path: str | Path) -> None:
        self.socket_path = str(socket_path)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._closed = False  # for good: a request after close() would leak a new socket
        #: What the runtime announced in its `/health` reply (`features`), once ready.
        self.features: frozenset[str] = frozenset()
        #: The protocol version agreed at `/init` (how `/run` is answered).
        self.protocol = PROTOCOL_VERSION

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._closed:
            raise ContainerUnreachable(f"the connection to {self.socket_path} is closed")
        reader, writer = self._reader, self._writer
        if reader is not None and writer is not None:
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            self._drop()  # the server closed it: reconnect
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as exc:
            raise ContainerUnreachable(f"cannot connect to {self.socket_path}: {exc}") from exc
        self._reader, self._writer = reader, writer
        return reader, writer

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        on_log: LogCallback | None = None,
    ) -> tuple[int, dict[str, Any]]:
        data = b"" if body is None else await off_loop_if_big(_encode, body, _size_hint(body))
        head = f"{method} {path} HTTP/1.1\r\nHost: runtime\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        async with self._lock:
            reader, writer = await self._connect()
            try:
                writer.write(head.encode("ascii") + b"\r\n" + data)
                await writer.drain()
                status, length, close = _parse_head(await reader.readuntil(b"\r\n\r\n"))
                if length is None:  # chunked: a streamed `/run`
                    frames = _FrameReader(on_log)
                    await frames.read(reader)
                    raw = b""
                else:
                    raw = await reader.readexactly(length)
            except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                self._drop()
                raise ContainerGone(f"{method} {path}: {exc or type(exc).__name__}") from exc
            except asyncio.LimitOverrunError as exc:
                self._drop()
                raise RuntimeBackendError(f"{method} {path}: response head too long") from exc
            except BaseException:  # cancelled, or not HTTP: the stream is in an unknown state
                self._drop()
                raise
            if close:
                self._drop()
        if length is None:
            return status, await frames.result()
        try:
            reply = await off_loop_if_big(_decode, raw, len(raw))
        except ValueError as exc:
            raise RuntimeBackendError(
                f"the runtime answered {method} {path} with invalid JSON (HTTP {status})"
            ) from exc
        return status, reply

    async def health(self) -> dict[str, Any]:
        status, reply = await self._request("GET", "/health")
        if status != 200:
            raise RuntimeBackendError(f"the runtime answered GET /health with HTTP {status}")
        return reply

    async def wait_ready(
        self,
        timeout: float,  # noqa: ASYNC109 - a bound on retries, with an early exit
        *,
        exited: Callable[[], Awaitable[bool]] | None = None,
        interval: float = 0.005,
        check_every: float = 0.1,
    ) -> dict[str, Any]:
        """Retry `/health` until the server answers; give up early once `exited()` says so.

        Raises `ContainerGone` when the sandbox exited or `timeout` seconds passed.
        """
        start = time.monotonic()
        deadline = start + timeout
        next_check = start + check_every
        while True:
            try:
                reply = await self.health()
            except ContainerGone as exc:
                last_error = exc
            else:
                features = reply.get("features")
                if isinstance(features, list):
                    self.features = frozenset(f for f in features if isinstance(f, str))
                return reply
            now = time.monotonic()
            if now >= deadline:
                raise ContainerGone(
                    f"the runtime did not answer within {timeout:g} s: {last_error}"
                )
            if exited is not None and now >= next_check:
                if await exited():
                    raise ContainerGone("the runtime exited before it was ready")
                next_check = time.monotonic() + check_every
            await asyncio.sleep(interval)

    async def init(
        self,
        code: bytes | str,
        entry: str,
        environment: Mapping[str, str],
        log_limit: int,
        layer_dir: str | None = None,
        protocol: int = MAX_PROTOCOL,
    ) -> InitReply:
        """`code` is the zip itself (sent base64), or the directory the node filled with it
        (`str`: only to a runtime whose `features` has `CODE_DIR_FEATURE`); `layer_dir` the
        function's dependency layer (only to one whose `features` has `LAYER_DIR_FEATURE`);
        `protocol` the highest version offered (the reply's `protocol` is the one agreed)."""
        body: dict[str, Any] = {
            "entry": entry,
            "environment": dict(environment),
            "log_limit": log_limit,
            "protocol": protocol,
        }
        if isinstance(code, str):
            body["code_dir"] = code
        else:
            body["code"] = await off_loop_if_big(_b64, code, len(code))
        if layer_dir is not None:
            body["layer_dir"] = layer_dir
        status, reply = await self._request("POST", "/init", body)
        if status == 200 or "protocol" in reply:
            self.protocol = check_protocol(reply, protocol)
        if status == 200:
            init_ms = float(reply.get("init_ms") or 0.0)
            return InitReply(init_ms=init_ms, logs=_logs(reply), protocol=self.protocol)
        if status == 400:
            return InitReply(
                init_ms=0.0, logs=_logs(reply), error=error_of(reply), protocol=self.protocol
            )
        raise RuntimeBackendError(
            f"the runtime refused POST /init with HTTP {status}: {error_of(reply)['message']}"
        )

    async def run(
        self, payload: Mapping[str, Any], on_log: LogCallback | None = None
    ) -> dict[str, Any]:
        """Run one execution; the reply holds `result` or `error`, `logs` and `duration_ms`.

        With protocol 2 agreed, the output arrives while the function runs and goes to
        `on_log` (dropped without one), frame by frame; the reply then has no `logs`."""
        status, reply = await self._request("POST", "/run", payload, on_log)
        if status != 200:
            raise RuntimeBackendError(
                f"the runtime refused POST /run with HTTP {status}: {error_of(reply)['message']}"
            )
        return reply

    async def close(self) -> None:
        """Close the connection for good: later requests raise `ContainerUnreachable`."""
        self._closed = True
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def check_layer_support(features: frozenset[str], image: str) -> None:
    """A runtime that does not announce `LAYER_DIR_FEATURE` (an image of before dependency
    layers, or an admin's own) cannot run a function that has a layer: `RuntimeBackendError`
    saying so and what to do, before any code is loaded into it."""
    if not {CODE_DIR_FEATURE, LAYER_DIR_FEATURE} <= features:
        raise RuntimeBackendError(
            f"the runtime image {image!r} cannot load dependency layers (its runtime does not "
            f"announce the {LAYER_DIR_FEATURE!r} feature): rebuild it (spinlet runtimes build "
            "--rebuild), or run the function without requirements",
            image=image,
            feature=LAYER_DIR_FEATURE,
        )


def check_protocol(reply: Mapping[str, Any], offered: int = MAX_PROTOCOL) -> int:
    """The version a reply agrees to: from `PROTOCOL_VERSION` to `offered`; any other (or
    none) is `RuntimeProtocolMismatch`."""
    spoken = reply.get("protocol")
    if not isinstance(spoken, int) or isinstance(spoken, bool):
        raise RuntimeProtocolMismatch(spoken, offered)
    if not PROTOCOL_VERSION <= spoken <= offered:
        raise RuntimeProtocolMismatch(spoken, offered)
    return spoken


def error_of(reply: Mapping[str, Any]) -> dict[str, str]:
    """The `error` object of a reply, normalised to `{type, message, traceback}` strings."""
    return ExecutionError.parse(reply.get("error")).as_json()


def _parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """Status, `Content-Length` (None for a chunked body) and whether the server closes, from
    a response's head."""
    try:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers or headers.get("transfer-encoding", "").lower() != "chunked":
            length: int | None = int(headers["content-length"])
        else:
            length = None
    except (ValueError, IndexError, KeyError) as exc:
        raise RuntimeBackendError(f"the runtime sent a malformed HTTP response: {head!r}") from exc
    return status, length, headers.get("connection", "").lower() == "close"


def _logs(reply: Mapping[str, Any]) -> str:
    logs = reply.get("logs")
    return logs if isinstance(logs, str) else ""


def _size_hint(body: Mapping[str, Any]) -> int:
    code = body.get("code")
    return len(code) if isinstance(code, str) else 0


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _decode(raw: bytes) -> dict[str, Any]:
    reply = json.loads(raw) if raw else {}
    if not isinstance(reply, dict):
        raise ValueError("not a JSON object")
    return reply


def _b64(code: bytes) -> str:
    return base64.b64encode(code).decode("ascii")


class _FrameReader:
    """Reads the chunked JSON lines of a streamed `/run` as they arrive, in bounded memory:
    each log frame goes to `on_log` as soon as its line is complete, so what is held is one
    unfinished frame (at most `MAX_FRAME` bytes) and one read (`READ_SIZE`)."""

    def __init__(self, on_log: LogCallback | None) -> None:
        self.on_log = on_log
        self._buffer = bytearray()
        self._scanned = 0  # no line end in the buffer before this
        self._result: bytes | None = None

    async def read(self, reader: asyncio.StreamReader) -> None:
        """To the terminating zero-length chunk."""
        while size := _chunk_size(await reader.readuntil(b"\r\n")):
            while size:
                piece = await reader.read(min(size, READ_SIZE))
                if not piece:
                    raise asyncio.IncompleteReadError(piece, size)
                size -= len(piece)
                self._feed(piece)
            if await reader.readexactly(2) != b"\r\n":
                raise RuntimeBackendError("the runtime sent a malformed chunk in /run")
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailers: none are used
        if self._buffer:
            raise RuntimeBackendError("the runtime ended /run in the middle of a frame")

    async def result(self) -> dict[str, Any]:
        """The result frame, as a v1 reply without `logs`."""
        raw = self._result
        if raw is None:
            raise RuntimeBackendError("the runtime ended /run without a result frame")
        try:
            reply = await off_loop_if_big(_decode, raw, len(raw))
        except ValueError as exc:
            raise RuntimeBackendError("the runtime sent an invalid result frame") from exc
        reply.pop("type", None)
        reply.pop("logs", None)  # the log frames carried it: never twice
        return reply

    def _feed(self, piece: bytes) -> None:
        buffer = self._buffer
        buffer += piece
        start = 0
        while (end := buffer.find(b"\n", max(start, self._scanned))) >= 0:
            self._frame(buffer[start:end])
            start = end + 1
        del buffer[:start]
        self._scanned = len(buffer)
        if len(buffer) > MAX_FRAME:
            raise RuntimeBackendError(f"the runtime sent a frame over {MAX_FRAME} bytes")

    def _frame(self, line: bytearray) -> None:
        if line.startswith(b'{"type":"result"') or line.startswith(b'{"type": "result"'):
            self._result = bytes(line)  # decoded once the stream ends (off the loop if big)
            return
        try:
            frame = json.loads(line)
        except ValueError as exc:
            raise RuntimeBackendError("the runtime sent a frame that is not JSON") from exc
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "result":
            self._result = bytes(line)
        elif kind == "log":
            data, stream, t = frame.get("data"), frame.get("stream"), frame.get("t")
            if not isinstance(data, str) or stream not in ("stdout", "stderr"):
                raise RuntimeBackendError(f"the runtime sent a malformed log frame: {frame!r}")
            if self.on_log is not None:
                at = float(t) if isinstance(t, int | float) else time.time()
                self.on_log(stream, data, at)
        elif not isinstance(frame, dict):
            raise RuntimeBackendError("the runtime sent a frame that is not a JSON object")
        # a frame of another type (a later version's) is skipped


def _chunk_size(line: bytes) -> int:
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError as exc:
        raise RuntimeBackendError(f"the runtime sent a malformed chunk size: {line!r}") from exc
