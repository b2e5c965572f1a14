"""Client side of the runtime protocol (see `runtimes/README.md`), spoken over a Unix socket.

One `RuntimeConnection` per container, opened when the container starts and kept open for its
whole life: the warm path is one HTTP request on an already-connected socket. A failure to talk
to the server at all (refused, reset, closed mid-reply) is `ContainerGone`, so that the pool can
ask the driver what happened to the container; a reply that breaks the protocol is a
`RuntimeBackendError` (a platform fault). A runtime that speaks another version of the protocol
(an image built for another release of Spinlet) is found at `/init`, whose reply carries the
version: `RuntimeProtocolMismatch`, before any execution runs on it.
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

#: The version of the runtime protocol this node speaks (`runtimes/README.md`); the runtime
#: image carries it in its `spinlet.runtime.protocol` label (`images.PROTOCOL_LABEL`).
PROTOCOL_VERSION = 1

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

    @property
    def ok(self) -> bool:
        return self.error is None


class RuntimeConnection:
    """A kept-open HTTP/1.1 connection to one runtime server's Unix socket.

    A minimal client for our own server (which always answers with a `Content-Length` and in one
    write): the warm path is one write and two reads on an already-connected socket, about a
    third cheaper than a general-purpose client session. One request at a time.
    """

    def __init__(self, socket_path: str | Path) -> None:
        self.socket_path = str(socket_path)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._closed = False  # for good: a request after close() would leak a new socket
        #: What the runtime announced in its `/health` reply (`features`), once ready.
        self.features: frozenset[str] = frozenset()

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
        self, method: str, path: str, body: Mapping[str, Any] | None = None
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
    ) -> InitReply:
        """`code` is the zip itself (sent base64), or the directory the node filled with it
        (`str`: only to a runtime whose `features` has `CODE_DIR_FEATURE`); `layer_dir` the
        function's dependency layer (only to one whose `features` has `LAYER_DIR_FEATURE`)."""
        body: dict[str, Any] = {
            "entry": entry,
            "environment": dict(environment),
            "log_limit": log_limit,
        }
        if isinstance(code, str):
            body["code_dir"] = code
        else:
            body["code"] = await off_loop_if_big(_b64, code, len(code))
        if layer_dir is not None:
            body["layer_dir"] = layer_dir
        status, reply = await self._request("POST", "/init", body)
        if status == 200 or "protocol" in reply:
            check_protocol(reply)
        if status == 200:
            return InitReply(init_ms=float(reply.get("init_ms") or 0.0), logs=_logs(reply))
        if status == 400:
            return InitReply(init_ms=0.0, logs=_logs(reply), error=error_of(reply))
        raise RuntimeBackendError(
            f"the runtime refused POST /init with HTTP {status}: {error_of(reply)['message']}"
        )

    async def run(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Run one execution; the reply holds `result` or `error`, `logs` and `duration_ms`."""
        status, reply = await self._request("POST", "/run", payload)
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


def check_protocol(reply: Mapping[str, Any]) -> None:
    """A reply that does not say it speaks `PROTOCOL_VERSION` is `RuntimeProtocolMismatch`."""
    spoken = reply.get("protocol")
    if spoken != PROTOCOL_VERSION or isinstance(spoken, bool):
        raise RuntimeProtocolMismatch(spoken, PROTOCOL_VERSION)


def error_of(reply: Mapping[str, Any]) -> dict[str, str]:
    """The `error` object of a reply, normalised to `{type, message, traceback}` strings."""
    return ExecutionError.parse(reply.get("error")).as_json()


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, `Content-Length` and whether the server closes, from a response's head."""
    try:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
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
