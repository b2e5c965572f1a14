"""Drive a Spinlet server with the unmodified python-qinlingclient, as `openstack function …` does.

Runs inside the client's own virtualenv (standard library + qinlingclient + keystoneauth1 only),
never inside Spinlet's. The client is built the way its OpenStackClient plugin builds it
(`qinlingclient.osc.plugin.make_client`): a keystoneauth1 session, the service type
`function-engine` and the Qinling URL as the endpoint override. There is no Keystone: the session
uses keystoneauth1's `none` plugin (what `--os-auth-type none` loads), and one call is repeated
through a `token_endpoint.Token` session (what `--os-auth-type token_endpoint` loads).

The calls repeat what the CLI's commands do (`qinlingclient/osc/v1/*.py`), `None` included for
every option the user did not give. Prints a JSON summary on stdout; on failure the summary names
the step and carries the traceback, stderr holds keystoneauth's log of each HTTP exchange, and the
exit status is 1.

    python qinling_driver.py --url http://127.0.0.1:7070 --workdir DIR --functions DIR
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import re
import sys
import time
import traceback
import urllib.parse
import urllib.request
import zipfile
from typing import Any

from keystoneauth1 import noauth, session, token_endpoint
from qinlingclient import utils as q_utils
from qinlingclient.common import base as q_base
from qinlingclient.common import exceptions as q_exc
from qinlingclient.v1 import client as q_client

SERVICE_TYPE = "function-engine"
# An async execution is shown again every POLL_INTERVAL seconds until its status is one of these.
FINAL_STATUSES = frozenset({"success", "failed", "error", "cancelled"})
POLL_INTERVAL = 0.2
POLL_DEADLINE = 60.0


def make_client(url: str, auth: Any, sent: list[dict[str, Any]] | None = None) -> q_client.Client:
    """As `qinlingclient.osc.plugin.make_client`, with `--qinling-url` given.

    With `sent`, each request that carries a body is recorded there as it went on the wire
    (method, path, content type, form fields): an observer only, the client is unchanged.
    """
    sess = session.Session(auth=auth)
    if sent is not None:
        sess.session.hooks["response"].append(lambda resp, **_: _record(resp, sent))
    return q_client.Client(url, session=sess, service_type=SERVICE_TYPE, region_name=None)


def _record(response: Any, sent: list[dict[str, Any]]) -> None:
    request = response.request
    if request.body is None:
        return
    content_type = request.headers.get("Content-Type", "")
    body = request.body if isinstance(request.body, bytes) else request.body.encode()
    entry: dict[str, Any] = {
        "method": request.method,
        "path": urllib.parse.urlsplit(request.url).path,
        "status": response.status_code,
        "content_type": content_type.split(";")[0],
    }
    if content_type.startswith("multipart/form-data"):
        entry["fields"] = sorted(
            name.decode()
            for name in re.findall(rb'Content-Disposition: form-data; name="([^"]+)"', body)
        )
    elif content_type.startswith("application/x-www-form-urlencoded"):
        entry["form"] = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
    else:
        entry["body"] = body.decode(errors="replace")
    sent.append(entry)


def managers(client: q_client.Client) -> dict[str, Any]:
    """The client's managers by attribute name (`runtimes`, `jobs`, …)."""
    return {
        name: value for name, value in vars(client).items() if isinstance(value, q_base.Manager)
    }


def manager_methods(client: q_client.Client) -> list[str]:
    """Every public method the client's managers define (not those they inherit)."""
    return sorted(
        f"{attr}.{name}"
        for attr, manager in managers(client).items()
        for name, value in vars(type(manager)).items()
        if inspect.isfunction(value) and not name.startswith("_")
    )


def record_calls(client: q_client.Client, called: set[str]) -> None:
    """Note in `called` each manager method called from now on (an observer only)."""

    def recorded(key: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            called.add(key)
            return method(*args, **kwargs)

        return call

    for key in manager_methods(client):
        attr, name = key.split(".")
        manager = managers(client)[attr]
        setattr(manager, name, recorded(key, getattr(manager, name)))


def outcome(call: Any) -> dict[str, Any]:
    """What a call gave: the record, or the client's error."""
    try:
        result = call()
    except q_exc.HTTPException as exc:
        return {"type": type(exc).__name__, "code": exc.code, "text": str(exc)}
    return {"type": "ok", "record": info(result) if hasattr(result, "_info") else None}


def zip_file(path: str, workdir: str) -> str:
    """As the CLI's `_get_package_file(file_path=...)`: one file zipped under its own name."""
    base = os.path.splitext(os.path.basename(path))[0]
    target = os.path.join(workdir, f"{base}.zip")
    with zipfile.ZipFile(target, mode="w") as archive:
        archive.write(path, os.path.basename(path))
    return target


def info(resource: Any) -> dict[str, Any]:
    """The record as the server sent it."""
    return dict(resource._info)


def poll(client: q_client.Client, execution_id: str) -> tuple[list[str], Any]:
    """`openstack function execution show ID` repeated until the status is final.

    Returns the statuses seen (each change once, in order) and the final record; past
    POLL_DEADLINE seconds it raises, naming the last status.
    """
    seen: list[str] = []
    deadline = time.monotonic() + POLL_DEADLINE
    while True:
        execution = client.function_executions.get(execution_id)
        if not seen or seen[-1] != execution.status:
            seen.append(execution.status)
        if execution.status in FINAL_STATUSES:
            return seen, execution
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"execution {execution_id} still {execution.status!r} after {POLL_DEADLINE} s"
                f" (statuses seen: {seen})"
            )
        time.sleep(POLL_INTERVAL)


def run(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    sent: list[dict[str, Any]] = []
    summary["sent"] = sent
    client = make_client(args.url, noauth.NoAuth(endpoint=args.url), sent)
    called: set[str] = set()
    summary["methods"] = manager_methods(client)
    summary["called"] = called
    record_calls(client, called)

    summary["step"] = "find runtime by name"
    summary["runtimes"] = [info(rt) for rt in client.runtimes.list()]
    runtime_id = q_utils.find_resource_id_by_name(client.runtimes, "python3")
    summary["runtime_id"] = runtime_id

    summary["step"] = "function create (multipart package)"
    package = zip_file(os.path.join(args.functions, "hello.py"), args.workdir)
    md5sum = q_utils.md5(file=package)
    summary["package_md5"] = md5sum
    with open(package, "rb") as fh:
        function = client.functions.create(
            name="qinling-hello",
            runtime=runtime_id,
            code={"source": "package", "md5sum": md5sum},
            package=fh,
            entry="hello.main",
            cpu=None,
            memory_size=None,
            timeout=None,
        )
    summary["created"] = info(function)
    function_id = function.id

    summary["step"] = "function show (by name, as the CLI resolves names)"
    summary["found_id"] = q_utils.find_resource_id_by_name(client.functions, "qinling-hello")
    summary["shown"] = info(client.functions.get(function_id))

    summary["step"] = "execution create (sync)"
    execution = client.function_executions.create(
        function_alias=None,
        function_id=function_id,
        function_version=0,
        sync=True,
        input='{"name": "Qinling"}',
    )
    summary["execution"] = info(execution)

    summary["step"] = "execution show"
    summary["execution_shown"] = info(client.function_executions.get(execution.id))

    summary["step"] = "execution log show"
    summary["log"] = client.function_executions.get_log(execution.id)

    summary["step"] = "execution list --filter function_id"
    listed = client.function_executions.list(function_id=function_id)
    summary["listed_execution_ids"] = [ex.id for ex in listed]

    summary["step"] = "execution create --async, then show until final, then log show"
    queued = client.function_executions.create(
        function_alias=None,
        function_id=function_id,
        function_version=0,
        sync=False,
        input='{"name": "async"}',
    )
    summary["async_created"] = info(queued)
    summary["async_polled"], finished = poll(client, queued.id)
    summary["async_execution"] = info(finished)
    summary["async_log"] = client.function_executions.get_log(queued.id)

    summary["step"] = "function update --description (form data, nulls dropped)"
    updated = client.functions.update(
        function_id,
        code=None,
        name=None,
        description="updated through python-qinlingclient",
        entry=None,
        cpu=None,
        memory_size=None,
        timeout=None,
    )
    summary["updated"] = info(updated)

    summary["step"] = "function update --file --entry (multipart with a package)"
    new_package = zip_file(os.path.join(args.functions, "echo.py"), args.workdir)
    with open(new_package, "rb") as fh:
        repackaged = client.functions.update(
            function_id,
            code={"source": "package"},
            package=fh,
            name=None,
            description=None,
            entry="echo.main",
            cpu=None,
            memory_size=None,
            timeout=None,
        )
    summary["repackaged"] = info(repackaged)
    summary["new_package_md5"] = q_utils.md5(file=new_package)

    summary["step"] = "execution create on the new code"
    echoed = client.function_executions.create(
        function_id=function_id, function_version=0, sync=True, input="[1, 2, 3]"
    )
    summary["echo_execution"] = info(echoed)

    summary["step"] = "function download"
    response = client.functions.get(function_id, download=True)
    downloaded = os.path.join(args.workdir, "downloaded.zip")
    with open(downloaded, "wb") as target:
        for chunk in response.iter_content(64 * 1024):
            target.write(chunk)
    with zipfile.ZipFile(downloaded) as archive:
        summary["downloaded_names"] = archive.namelist()
    summary["downloaded_md5"] = q_utils.md5(file=downloaded)

    summary["step"] = "a failing function"
    fail_package = zip_file(os.path.join(args.functions, "fail.py"), args.workdir)
    with open(fail_package, "rb") as fh:
        failing = client.functions.create(
            name="qinling-fail",
            runtime=runtime_id,
            code={"source": "package", "md5sum": q_utils.md5(file=fail_package)},
            package=fh,
            entry="fail.main",
        )
    failed = client.function_executions.create(function_id=failing.id, sync=True)
    summary["failed_execution"] = info(failed)
    summary["failed_log"] = client.function_executions.get_log(failed.id)

    summary["step"] = "errors: show an unknown function"
    try:
        client.functions.get("00000000-0000-0000-0000-000000000000")
    except q_exc.HTTPException as exc:
        summary["not_found"] = {"type": type(exc).__name__, "code": exc.code, "text": str(exc)}

    release_id = release(client, args, runtime_id, summary)
    every_other_method(client, function_id, release_id, summary)

    summary["step"] = "token_endpoint session"
    token_client = make_client(args.url, token_endpoint.Token(args.url, "unused-token"))
    summary["token_client_function_ids"] = [fn.id for fn in token_client.functions.list()]

    other_runtimes(client, args, summary)

    summary["step"] = "execution delete, function delete"
    for ex in [*client.function_executions.list(function_id=function_id), failed]:
        client.function_executions.delete(ex.id)
    client.functions.delete(function_id)
    client.functions.delete(failing.id)
    client.functions.delete(release_id)
    summary["functions_left"] = [fn.id for fn in client.functions.list()]
    try:
        client.functions.get(function_id)
    except q_exc.HTTPNotFound as exc:
        summary["deleted_not_found"] = str(exc)

    summary["called"] = sorted(called)
    summary["step"] = "done"


#: Functions on the other shipped runtimes: runtime name, the file zipped, its entry, the input.
OTHER_RUNTIMES = (
    ("nodejs20", os.path.join("hello-node", "index.js"), "index.main", '{"name": "Node"}'),
    ("python3.13", "hello.py", "hello.main", '{"name": "Python 3.13"}'),
)


def other_runtimes(
    client: q_client.Client, args: argparse.Namespace, summary: dict[str, Any]
) -> None:
    """A function on each other shipped runtime, created with its `runtime_id` from a zip package
    and executed synchronously; then deleted with its execution."""
    summary["other_runtimes"] = results = {}
    for name, path, entry, event in OTHER_RUNTIMES:
        summary["step"] = f"function create and execute on runtime {name}"
        runtime_id = q_utils.find_resource_id_by_name(client.runtimes, name)
        workdir = os.path.join(args.workdir, name)
        os.makedirs(workdir, exist_ok=True)
        package = zip_file(os.path.join(args.functions, path), workdir)
        with open(package, "rb") as fh:
            function = client.functions.create(
                name=f"qinling-{name.replace('.', '-')}",
                runtime=runtime_id,
                code={"source": "package", "md5sum": q_utils.md5(file=package)},
                package=fh,
                entry=entry,
                cpu=None,
                memory_size=None,
                timeout=None,
            )
        execution = client.function_executions.create(
            function_id=function.id, sync=True, input=event
        )
        results[name] = {
            "runtime_id": runtime_id,
            "created": info(function),
            "execution": info(execution),
            "log": client.function_executions.get_log(execution.id),
        }
        client.function_executions.delete(execution.id)
        client.functions.delete(function.id)


def release(
    client: q_client.Client, args: argparse.Namespace, runtime_id: str, summary: dict[str, Any]
) -> str:
    """Versions and aliases, as `openstack function version|alias …` call them."""
    summary["step"] = "version create (publish)"
    package = zip_file(os.path.join(args.functions, "hello.py"), args.workdir)
    with open(package, "rb") as fh:
        function = client.functions.create(
            name="qinling-release",
            runtime=runtime_id,
            code={"source": "package", "md5sum": q_utils.md5(file=package)},
            package=fh,
            entry="hello.main",
        )
    summary["version_1"] = info(client.function_versions.create(function.id, description="hello"))
    summary["version_1_again"] = info(client.function_versions.create(function.id, None))

    summary["step"] = "function update with new code, version create"
    new_package = zip_file(os.path.join(args.functions, "echo.py"), args.workdir)
    with open(new_package, "rb") as fh:
        client.functions.update(
            function.id,
            code={"source": "package"},
            package=fh,
            name=None,
            description=None,
            entry="echo.main",
            cpu=None,
            memory_size=None,
            timeout=None,
        )
    summary["version_2"] = info(client.function_versions.create(function.id, description="echo"))
    summary["versions_listed"] = [info(v) for v in client.function_versions.list(function.id)]
    summary["version_1_shown"] = info(client.function_versions.get(function.id, 1))

    summary["step"] = "alias create"
    alias = client.function_aliases.create(
        "qinling-live", function_id=function.id, function_version=1, description=""
    )
    summary["alias"] = info(alias)

    summary["step"] = "execution through the alias (function and version None, as the CLI)"
    summary["alias_execution"] = info(
        client.function_executions.create(
            function_alias="qinling-live",
            function_id=None,
            function_version=None,
            sync=True,
            input='{"name": "alias"}',
        )
    )

    summary["step"] = "alias update (nulls, the version as a string, as the CLI sends it)"
    summary["alias_updated"] = info(
        client.function_aliases.update(
            "qinling-live", function_id=None, function_version="2", description=None
        )
    )
    summary["alias_execution_2"] = info(
        client.function_executions.create(function_alias="qinling-live", input="[4, 5]")
    )

    summary["step"] = "execution of version 1"
    summary["version_execution"] = info(
        client.function_executions.create(
            function_id=function.id, function_version=1, sync=True, input='{"name": "v1"}'
        )
    )
    summary["aliases_listed"] = [info(a) for a in client.function_aliases.list()]
    summary["alias_shown"] = info(client.function_aliases.get("qinling-live"))

    summary["step"] = "errors: delete a version an alias uses, a function with an alias"
    for key, call in (
        ("version_in_use", lambda: client.function_versions.delete(function.id, 2)),
        ("function_with_alias", lambda: client.functions.delete(function.id)),
    ):
        try:
            call()
        except q_exc.HTTPException as exc:
            summary[key] = {"type": type(exc).__name__, "code": exc.code, "text": str(exc)}

    summary["step"] = "alias delete, version delete"
    client.function_aliases.delete("qinling-live")
    client.function_versions.delete(function.id, 2)
    summary["versions_left"] = [
        v.version_number for v in client.function_versions.list(function.id)
    ]
    summary["aliases_left"] = [a.name for a in client.function_aliases.list()]
    return str(function.id)


def every_other_method(
    client: q_client.Client, function_id: str, release_id: str, summary: dict[str, Any]
) -> None:
    """The manager methods the CLI steps above do not call, with what each sends (None for
    what a CLI user did not give). Spinlet has no version detach yet: its route
    answer 404, never 400 for a field."""
    summary["step"] = "runtime create (is_public and trusted by default), show, pool, delete"
    image = next(rt["image"] for rt in summary["runtimes"] if rt["name"] == "python3")
    calls = summary["other_methods"] = {}
    calls["runtimes.create"] = outcome(
        lambda: client.runtimes.create(image, name="qinling-rt", description="from the client")
    )
    runtime_id = (calls["runtimes.create"].get("record") or {}).get("id", "none")
    calls["runtimes.get"] = outcome(lambda: client.runtimes.get(runtime_id))
    calls["runtimes.get_pool"] = outcome(lambda: client.runtimes.get_pool(runtime_id))
    calls["runtimes.delete"] = outcome(lambda: client.runtimes.delete(runtime_id))

    summary["step"] = "workers, scaling, detaching"

    def workers() -> list[dict[str, Any]]:
        return [info(worker) for worker in client.function_workers.list(function_id)]

    calls["functions.scaleup"] = outcome(lambda: client.functions.scaleup(function_id, 2))
    calls["function_workers.list"] = outcome(lambda: client.function_workers.list(function_id))
    summary["workers_scaled_up"] = workers()
    calls["functions.scaledown"] = outcome(lambda: client.functions.scaledown(function_id, 1))
    summary["workers_scaled_down"] = workers()
    calls["functions.detach"] = outcome(lambda: client.functions.detach(function_id))
    summary["workers_detached"] = workers()
    calls["function_versions.detach"] = outcome(
        lambda: client.function_versions.detach(release_id, 1)
    )

    summary["step"] = "jobs: create, list, show, pause, resume, delete"
    missing = "00000000-0000-0000-0000-000000000001"
    calls["jobs.create"] = outcome(
        lambda: client.jobs.create(
            function_id=function_id,
            function_version=0,
            name="qinling-job",
            first_execution_time=None,
            pattern="*/5 * * * *",
            function_input='{"name": "job"}',
            count=3,
        )
    )
    job_id = (calls["jobs.create"].get("record") or {}).get("id", missing)
    calls["jobs.list"] = outcome(lambda: client.jobs.list())
    summary["jobs_listed"] = [job.id for job in client.jobs.list()]
    calls["jobs.get"] = outcome(lambda: client.jobs.get(job_id))
    # As `openstack function job update` sends it: None for every option not given.
    calls["jobs.update"] = outcome(
        lambda: client.jobs.update(
            job_id,
            name="renamed",
            status="paused",
            pattern="0 * * * *",
            next_execution_time=None,
            function_input='{"name": "hourly"}',
        )
    )
    summary["job_resumed"] = outcome(
        lambda: client.jobs.update(
            job_id,
            name=None,
            status="running",
            pattern=None,
            next_execution_time=None,
            function_input=None,
        )
    )
    calls["jobs.delete"] = outcome(lambda: client.jobs.delete(job_id))
    summary["job_deleted_get"] = outcome(lambda: client.jobs.get(job_id))
    webhooks(client, function_id, release_id, summary)


def webhooks(
    client: q_client.Client, function_id: str, release_id: str, summary: dict[str, Any]
) -> None:
    """`openstack function webhook create|list|show|update|delete`, and a call of the
    webhook's URL as any HTTP client makes it: no token."""
    summary["step"] = "webhooks"
    calls = summary["other_methods"]
    calls["webhooks.create"] = outcome(
        lambda: client.webhooks.create(function_id, function_version=0, description="hook")
    )
    hook = calls["webhooks.create"].get("record") or {}
    hook_id = hook.get("id", "none")
    calls["webhooks.list"] = {"type": "ok", "records": [info(w) for w in client.webhooks.list()]}
    calls["webhooks.get"] = outcome(lambda: client.webhooks.get(hook_id))
    calls["webhooks.update"] = outcome(
        lambda: client.webhooks.update(
            hook_id, function_id=release_id, function_version=1, description=None
        )
    )
    summary["step"] = "webhook URL called without a token"
    request = urllib.request.Request(
        hook.get("webhook_url", ""), data=b'{"name": "webhook"}', method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        summary["webhook_call"] = {"status": response.status, "body": json.load(response)}
    _, finished = poll(client, summary["webhook_call"]["body"]["execution_id"])
    summary["webhook_execution"] = info(finished)
    calls["webhooks.delete"] = outcome(lambda: client.webhooks.delete(hook_id))
    summary["webhook_deleted"] = outcome(lambda: client.webhooks.get(hook_id))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the Spinlet server, e.g. http://host:port")
    parser.add_argument("--workdir", required=True, help="a directory for the zip packages")
    parser.add_argument("--functions", required=True, help="the directory with hello.py etc.")
    args = parser.parse_args()
    # Each request and response, bodies included, goes to stderr (shown when the test fails).
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("keystoneauth").setLevel(logging.DEBUG)

    summary: dict[str, Any] = {
        "versions": {
            name: _version(name) for name in ("python-qinlingclient", "keystoneauth1", "requests")
        }
    }
    try:
        run(args, summary)
    except Exception as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
        summary["traceback"] = traceback.format_exc()
        print(json.dumps(summary, indent=2, default=str))
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


if __name__ == "__main__":
    sys.exit(main())
