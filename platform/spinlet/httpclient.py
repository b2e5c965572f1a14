"""The few HTTP requests the SDK and the CLI make, on the standard library's `http.client`.

Why not httpx: loading it (with httpcore, h11 and its TLS context) costs about 0.15 s of CPU,
more than a whole `spinlet invoke` may (measured: the command went from 0.31 s to about 0.17 s
of CPU). A request opens its own connection (one round trip more on a local node, and never a
request resent on a connection the server had closed). Connection problems are `OSError`s
(`ConnectionRefusedError`, `TimeoutError`), malformed answers `http.client.HTTPException`.

`stream` hands over a response's body as it arrives (a followed log): each piece as soon as
the socket has it, never waiting to fill a buffer.
"""

from __future__ import annotations

import http.client
import json
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: A file field of a multipart body: (file name, content, content type).
FileField = tuple[str, bytes, str]
#: The most a streamed body hands over at once (less whenever less has arrived).
PIECE = 64 * 1024


@dataclass(frozen=True)
class Response:
    status_code: int
    reason_phrase: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def multipart(fields: dict[str, str], files: dict[str, FileField]) -> tuple[bytes, str]:
    """A `multipart/form-data` body and its content type."""
    boundary = secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    for name, (filename, data, content_type) in files.items():
        quoted = urllib.parse.quote(filename, safe=" ._-")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{quoted}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class HttpClient:
    """Requests to one base URL (`http://` or `https://`, optionally with a path)."""

    def __init__(self, base_url: str, *, timeout: float, headers: dict[str, str]) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        self.url = url
        self.timeout = timeout
        self.headers = {"User-Agent": "spinlet", **headers}

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        data: dict[str, str] | None = None,
        files: dict[str, FileField] | None = None,
    ) -> Response:
        headers = dict(self.headers)
        body: bytes | None = None
        if files:
            body, headers["Content-Type"] = multipart(data or {}, files)
        elif data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json is not None:
            body = _json_bytes(json)
            headers["Content-Type"] = "application/json"
        connection = self._connect()
        try:
            connection.request(method, self._target(path, params), body=body, headers=headers)
            answer = connection.getresponse()
            return Response(answer.status, answer.reason, answer.read())
        finally:
            connection.close()

    @contextmanager
    def stream(
        self, method: str, path: str, *, params: dict[str, str] | None = None
    ) -> Iterator[StreamedResponse]:
        """A response whose body is read as it arrives. Its headers must come within the
        timeout; its body may take as long as the server keeps it open (a followed execution
        may print nothing for minutes, or wait in its queue), so reading it has no timeout."""
        connection = self._connect()
        try:
            connection.request(method, self._target(path, params), headers=dict(self.headers))
            sock = connection.sock  # the response reads it, also when the connection lets go
            with connection.getresponse() as answer:
                if sock is not None:
                    sock.settimeout(None)
                yield StreamedResponse(answer)
        finally:
            connection.close()

    def _target(self, path: str, params: dict[str, str] | None) -> str:
        target = self.url.path.rstrip("/") + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        return target

    def _connect(self) -> http.client.HTTPConnection:
        kind = (
            http.client.HTTPSConnection
            if self.url.scheme == "https"
            else http.client.HTTPConnection
        )
        return kind(self.url.hostname or "", self.url.port, timeout=self.timeout)


class StreamedResponse:
    """A response being received: its status at once, its body piece by piece."""

    def __init__(self, answer: http.client.HTTPResponse) -> None:
        self._answer = answer
        self.status_code = answer.status
        self.reason_phrase = answer.reason

    def pieces(self) -> Iterator[bytes]:
        """The body's bytes as they arrive (for a chunked body, no later than its chunks).
        A body cut short (the server went away) raises `ConnectionResetError`."""
        try:
            while piece := self._answer.read1(PIECE):
                yield piece
        except http.client.IncompleteRead as exc:
            raise ConnectionResetError(
                "the connection closed before the end of the answer"
            ) from exc

    def read(self) -> Response:
        """The whole response (for an error's body)."""
        return Response(self.status_code, self.reason_phrase, self._answer.read())


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()
