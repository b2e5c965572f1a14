"""Python SDK for the Spinlet API.

from spinlet.client import Client
with Client("http://127.0.0.1:7070") as spinlet:
    fn = spinlet.functions.create("hello", "functions/hello/hello.py")
    ex = spinlet.executions.create("hello", input={"name": "Ada"})
    print(ex["result"], spinlet.executions.log(ex["id"]))
    queued = spinlet.executions.create("hello", input={"name": "Ada"}, sync=False)
    for text in spinlet.executions.follow(queued["id"]):
        print(text, end="")  # as it is printed, until the execution ends
"""

from __future__ import annotations

import codecs
import io
import os
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from spinlet.httpclient import HttpClient, Response

DEFAULT_URL = "http://127.0.0.1:7070"
FINAL_STATUSES = ("success", "failed", "error", "cancelled")


class ApiError(Exception):
    """The server answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{message} ({status} {code})")


def _raise_for_error(response: Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error", {})
        code, message = error.get("code", "http_error"), error.get("message", response.text)
    except (ValueError, AttributeError):
        code, message = "http_error", response.text or response.reason_phrase
    raise ApiError(response.status_code, code, message)


def package_bytes(path: str | Path) -> tuple[bytes, str]:
    """A package from a .py file, a .zip, or a directory (zipped here)."""
    path = Path(path)
    if path.is_dir():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(path.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    archive.write(file, file.relative_to(path).as_posix())
        return buffer.getvalue(), f"{path.name}.zip"
    return path.read_bytes(), path.name


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client


class Runtimes(_Resource):
    def list(self) -> list[dict[str, Any]]:
        runtimes: list[dict[str, Any]] = self._client.request("GET", "/v1/runtimes")["runtimes"]
        return runtimes

    def get(self, ref: str) -> dict[str, Any]:
        return self._client.obj("GET", f"/v1/runtimes/{ref}")

    def create(self, name: str, image: str, description: str | None = None) -> dict[str, Any]:
        body = {"name": name, "image": image, "description": description}
        return self._client.obj("POST", "/v1/runtimes", json=body)

    def delete(self, ref: str) -> None:
        self._client.request("DELETE", f"/v1/runtimes/{ref}")


def _form(fields: dict[str, Any]) -> dict[str, str]:
    """Form fields from keyword arguments (None: not sent)."""
    return {
        key: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for key, value in fields.items()
        if value is not None
    }


#: A list of records (a name that the methods called `list` do not hide).
Records = list[dict[str, Any]]


class Functions(_Resource):
    def create(self, name: str, package: str | Path, **fields: Any) -> dict[str, Any]:
        """`fields`: entry, runtime_id, timeout, memory_size, cpu, concurrency, retries,
        environment (a JSON object as a string), network (bool), description, requirements
        (requirements.txt lines; the function is `building` until they are resolved)."""
        data, filename = package_bytes(package)
        form = {"name": name, **_form(fields)}
        files = {"package": (filename, data, "application/octet-stream")}
        return self._client.obj("POST", "/v1/functions", data=form, files=files)

    def update(self, ref: str, package: str | Path | None = None, **fields: Any) -> dict[str, Any]:
        """`fields` as for `create`; `environment` replaces all variables, while
        `environment_add` (a JSON object as a string) and `environment_remove` (a JSON list of
        names) change only those."""
        form = _form(fields)
        if package is None:
            return self._client.obj("PUT", f"/v1/functions/{ref}", data=form)
        data, filename = package_bytes(package)
        files = {"package": (filename, data, "application/octet-stream")}
        return self._client.obj("PUT", f"/v1/functions/{ref}", data=form, files=files)

    def list(self) -> list[dict[str, Any]]:
        functions: list[dict[str, Any]] = self._client.request("GET", "/v1/functions")["functions"]
        return functions

    def get(self, ref: str) -> dict[str, Any]:
        return self._client.obj("GET", f"/v1/functions/{ref}")

    def download(self, ref: str) -> bytes:
        return self._client.raw("GET", f"/v1/functions/{ref}", params={"download": "true"}).content

    def rebuild(self, ref: str) -> dict[str, Any]:
        """Resolve the function's requirements again; it is `building` until they are."""
        return self._client.obj("POST", f"/v1/functions/{ref}/rebuild")

    def delete(self, ref: str) -> None:
        self._client.request("DELETE", f"/v1/functions/{ref}")

    def workers(self, ref: str) -> Records:
        """Its warm containers on the live nodes (`provisioned`: kept by `scale_up`)."""
        workers: Records = self._client.request("GET", f"/v1/functions/{ref}/workers")["workers"]
        return workers

    def scale_up(self, ref: str, count: int = 1) -> dict[str, Any]:
        """Keep `count` more containers initialised for its current code (provisioned)."""
        return self._client.obj("POST", f"/v1/functions/{ref}/scale_up", json={"count": count})

    def scale_down(self, ref: str, count: int = 1) -> dict[str, Any]:
        return self._client.obj("POST", f"/v1/functions/{ref}/scale_down", json={"count": count})

    def detach(self, ref: str) -> dict[str, Any]:
        """Release every provisioned container of the function."""
        return self._client.obj("POST", f"/v1/functions/{ref}/detach")


class Executions(_Resource):
    def create(
        self,
        function: str | None = None,
        input: Any = None,
        *,
        version: int = 0,
        alias: str | None = None,
        sync: bool = True,
        description: str | None = None,
        id: str | None = None,
        source_execution_id: str | None = None,
        schedule: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Run a function: the finished record when `sync`, else the queued one at once;
        with `schedule` (a time: RFC 3339 text or an aware datetime), `scheduled` until then
        (`sync` is then false).

        A client-chosen `id` (a UUID) makes retrying the call safe.
        """
        if schedule is not None:
            sync = False
        body = {
            "function_id": function,
            "function_version": version,
            "function_alias": alias,
            "input": input,
            "sync": sync,
            "description": description,
            "id": id,
            "source_execution_id": source_execution_id,
            "schedule": _time(schedule),
        }
        body = {k: v for k, v in body.items() if v is not None or k == "input"}
        return self._client.obj("POST", "/v1/executions", json=body)

    def get(
        self, execution_id: str, *, wait: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """The record; with `wait`, once it is final (or when `timeout` seconds have passed)."""
        path = f"/v1/executions/{execution_id}"
        if not wait:
            return self._client.obj("GET", path)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 60.0 if deadline is None else max(0.0, min(60.0, deadline - time.monotonic()))
            record = self._client.obj("GET", path, params={"wait": f"{step:.3f}"})
            if record["status"] in FINAL_STATUSES:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                return record

    def result(self, execution_id: str) -> Any:
        """The result of a finished execution (ApiError 400 when it failed, 404 when expired)."""
        return self._client.obj("GET", f"/v1/executions/{execution_id}/result")["data"]

    def list(self, **filters: Any) -> list[dict[str, Any]]:
        """Executions, newest first; filters as the API takes them (`status="in:failed,error"`,
        `id_prefix="38eda13e"`)."""
        params = {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in filters.items()
            if v is not None
        }
        executions: list[dict[str, Any]] = self._client.request(
            "GET", "/v1/executions", params=params
        )["executions"]
        return executions

    def log(self, execution_id: str) -> str:
        """The log as it is now (`""` while the execution runs: `follow` streams it)."""
        return self._client.raw("GET", f"/v1/executions/{execution_id}/log").text

    def follow(self, execution_id: str, timestamps: bool = False) -> Iterator[str]:
        """The log from its start, then its text as it is written, each piece as soon as it
        arrives; the iteration ends when the execution does (read the record for its status:
        a node may also end it early for a reader that fell too far behind). `timestamps`
        prefixes each line with when it was written and its stream (`2026-12-02T12:00:00.123456Z
        stdout `)."""
        params = {"follow": "true", **({"timestamps": "true"} if timestamps else {})}
        # A character may be split between two pieces: decoded once it is whole.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for piece in self._client.stream("GET", f"/v1/executions/{execution_id}/log", params):
            if text := decoder.decode(piece):
                yield text
        if rest := decoder.decode(b"", final=True):
            yield rest

    def cancel(self, execution_id: str, *, kill: bool = False) -> dict[str, Any]:
        path = f"/v1/executions/{execution_id}/cancel"
        return self._client.obj("POST", path, json={"kill": kill})

    def delete(self, execution_id: str) -> None:
        self._client.request("DELETE", f"/v1/executions/{execution_id}")

    def purge(self, *, keep_last: int | None = None, to_datetime: str | None = None) -> int:
        """Delete finished executions but the newest `keep_last`, or those created before."""
        params = {"keep_last": keep_last, "to_datetime": to_datetime}
        query = {k: str(v) for k, v in params.items() if v is not None}
        return int(self._client.obj("DELETE", "/v1/executions", params=query)["deleted"])


class Versions(_Resource):
    """Published versions of a function: immutable snapshots numbered from 1."""

    def publish(self, function: str, description: str | None = None) -> dict[str, Any]:
        """Publish the function's current code and config (the latest version when unchanged)."""
        path = f"/v1/functions/{function}/versions"
        return self._client.obj("POST", path, json={"description": description})

    def list(self, function: str) -> list[dict[str, Any]]:
        versions: list[dict[str, Any]] = self._client.request(
            "GET", f"/v1/functions/{function}/versions"
        )["function_versions"]
        return versions

    def get(self, function: str, number: int) -> dict[str, Any]:
        return self._client.obj("GET", f"/v1/functions/{function}/versions/{number}")

    def download(self, function: str, number: int) -> bytes:
        path = f"/v1/functions/{function}/versions/{number}"
        return self._client.raw("GET", path, params={"download": "true"}).content

    def delete(self, function: str, number: int) -> None:
        self._client.request("DELETE", f"/v1/functions/{function}/versions/{number}")


class Aliases(_Resource):
    """Named pointers to a function at a version, with an optional weighted canary."""

    def create(
        self,
        name: str,
        function: str,
        version: int = 0,
        *,
        description: str | None = None,
        routing: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`routing={"version": N, "weight": 0.1}` sends that share of executions to N."""
        body = {
            "name": name,
            "function_id": function,
            "function_version": version,
            "description": description,
            "routing": routing,
        }
        return self._client.obj("POST", "/v1/aliases", json=body)

    def update(
        self,
        name: str,
        *,
        function: str | None = None,
        version: int | None = None,
        description: str | None = None,
        routing: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Change what is given (None: unchanged); `routing={}` removes the canary."""
        body = {
            "function_id": function,
            "function_version": version,
            "description": description,
            "routing": routing,
        }
        return self._client.obj("PUT", f"/v1/aliases/{name}", json=body)

    def list(self, function: str | None = None) -> list[dict[str, Any]]:
        params = {"function_id": function} if function else None
        body = self._client.request("GET", "/v1/aliases", params=params)
        aliases: list[dict[str, Any]] = body["function_aliases"]
        return aliases

    def get(self, name: str) -> dict[str, Any]:
        return self._client.obj("GET", f"/v1/aliases/{name}")

    def delete(self, name: str) -> None:
        self._client.request("DELETE", f"/v1/aliases/{name}")


def _webhook_body(
    function: str | None,
    alias: str | None,
    version: int | None,
    mode: str | None,
    description: str | None,
) -> dict[str, Any]:
    return {
        "function_id": function,
        "function_alias": alias,
        "function_version": version,
        "mode": mode,
        "description": description,
    }


class Webhooks(_Resource):
    """URLs that run a function without a token (the id is the secret)."""

    def create(
        self,
        function: str | None = None,
        version: int = 0,
        *,
        alias: str | None = None,
        mode: str = "async",
        description: str | None = None,
    ) -> dict[str, Any]:
        """`mode="http"` runs the function at once with an HTTP event (its answer shapes the
        response); `"async"` queues an execution and answers its id."""
        body = _webhook_body(function, alias, version, mode, description)
        return self._client.obj("POST", "/v1/webhooks", json=body)

    def update(
        self,
        webhook_id: str,
        *,
        function: str | None = None,
        version: int | None = None,
        alias: str | None = None,
        mode: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Change what is given (None: unchanged)."""
        body = _webhook_body(function, alias, version, mode, description)
        return self._client.obj("PUT", f"/v1/webhooks/{webhook_id}", json=body)

    def list(self, function: str | None = None) -> list[dict[str, Any]]:
        params = {"function_id": function} if function else None
        webhooks: list[dict[str, Any]] = self._client.request("GET", "/v1/webhooks", params=params)[
            "webhooks"
        ]
        return webhooks

    def get(self, webhook_id: str) -> dict[str, Any]:
        return self._client.obj("GET", f"/v1/webhooks/{webhook_id}")

    def delete(self, webhook_id: str) -> None:
        self._client.request("DELETE", f"/v1/webhooks/{webhook_id}")


def _time(value: str | datetime | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


class Jobs(_Resource):
    """Cron jobs: an async execution of a function at each tick of a pattern."""

    def create(
        self,
        function: str | None = None,
        pattern: str | None = None,
        input: Any = None,
        *,
        name: str | None = None,
        version: int = 0,
        alias: str | None = None,
        first_execution_time: str | datetime | None = None,
        count: int | None = None,
        timezone: str | None = None,
    ) -> dict[str, Any]:
        """A job firing `function` (or `alias`) at each tick of `pattern` (cron: 5 fields, or
        6 with seconds last), from `first_execution_time`, `count` times (None: no end)."""
        body = {
            "name": name,
            "function_id": function,
            "function_alias": alias,
            "function_version": version,
            "function_input": input,
            "pattern": pattern,
            "first_execution_time": _time(first_execution_time),
            "count": count,
            "timezone": timezone,
        }
        return self._client.obj("POST", "/v1/jobs", json=body)

    def list(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self._client.request("GET", "/v1/jobs")["jobs"]
        return jobs

    def get(self, job_id: str) -> dict[str, Any]:
        return self._client.obj("GET", f"/v1/jobs/{job_id}")

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Change what is given (`status`, `pattern`, `next_execution_time`, `name`,
        `function_input`, `timezone`); None leaves a field as it is."""
        body = {k: _time(v) if isinstance(v, datetime) else v for k, v in fields.items()}
        return self._client.obj("PUT", f"/v1/jobs/{job_id}", json=body)

    def pause(self, job_id: str) -> dict[str, Any]:
        return self.update(job_id, status="paused")

    def resume(self, job_id: str) -> dict[str, Any]:
        """Running again; when its next tick has passed meanwhile, the next one from now."""
        return self.update(job_id, status="running")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.update(job_id, status="cancelled")

    def delete(self, job_id: str) -> None:
        """Delete the job (the executions it fired stay)."""
        self._client.request("DELETE", f"/v1/jobs/{job_id}")


class Client:
    """The Spinlet API. Connection problems raise `OSError` (`ConnectionRefusedError`,
    `TimeoutError`); answers with an error status raise `ApiError`."""

    def __init__(
        self, url: str | None = None, *, token: str | None = None, timeout: float = 960.0
    ) -> None:
        """`token` (default: SPINLET_TOKEN) is sent as X-Auth-Token."""
        self.url = (url or os.environ.get("SPINLET_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("SPINLET_TOKEN")
        headers = {"X-Auth-Token": token} if token else {}
        self._http = HttpClient(self.url, timeout=timeout, headers=headers)
        self.runtimes = Runtimes(self)
        self.functions = Functions(self)
        self.executions = Executions(self)
        self.versions = Versions(self)
        self.aliases = Aliases(self)
        self.webhooks = Webhooks(self)
        self.jobs = Jobs(self)

    def raw(self, method: str, path: str, **kwargs: Any) -> Response:
        response = self._http.request(method, path, **kwargs)
        _raise_for_error(response)
        return response

    def stream(self, method: str, path: str, params: dict[str, str]) -> Iterator[bytes]:
        """The body of a response as it arrives (an error status raises `ApiError`)."""
        with self._http.stream(method, path, params=params) as response:
            if response.status_code >= 400:
                _raise_for_error(response.read())
            yield from response.pieces()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.raw(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def obj(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self.request(method, path, **kwargs))

    def close(self) -> None:
        """Nothing to release (each request has its own connection); kept for `with`."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
