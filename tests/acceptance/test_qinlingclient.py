"""The unmodified python-qinlingclient (and the `openstack` CLI on top of it) drives Spinlet.

The client's dependencies clash with Spinlet's, so it is installed from the package index into a
virtualenv of its own, cached between runs under `$XDG_CACHE_HOME/spinlet-test/` (default
`~/.cache/spinlet-test/`) and keyed on the requirement list and the Python version. Creating it
takes a network connection to the index: without one the test is skipped, or fails under
CI=true. There is no Keystone: the client gets a keystoneauth1 session with the `none` auth
plugin and the server's URL as its endpoint, as `openstack --os-auth-type none --qinling-url URL`
does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Server
from tests.conftest import FUNCTIONS, unavailable

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

# The client and what its code calls directly, pinned: the test is about Spinlet's API, not about
# what a new release of a retired client's dependencies does. The rest resolves from these.
REQUIREMENTS = (
    "python-qinlingclient==5.1.1",
    "keystoneauth1==5.18.1",
    "python-keystoneclient==6.0.0",
    "requests==2.34.2",
)
DRIVER = Path(__file__).with_name("qinling_driver.py")
# What pip prints when it cannot reach the index (as opposed to a resolution or build failure);
# with retries off it only says that the index offered no version at all of a package it has.
NETWORK_ERRORS = (
    "(from versions: none)",
    "NewConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "SSLError",
    "ConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spinlet-test"


def venv_key() -> str:
    python = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"
    return hashlib.sha256("\n".join((python, *REQUIREMENTS)).encode()).hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def build_venv(venv: Path) -> None:
    """A new virtualenv at `venv` with REQUIREMENTS installed; a missing index is `unavailable`."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    command = [
        str(venv_python(venv)),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        # An index that does not answer costs minutes, not the default retries x timeout.
        *("--timeout", "60", "--retries", "2"),
        *REQUIREMENTS,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        shutil.rmtree(venv, ignore_errors=True)
        unavailable(
            f"pip install {' '.join(REQUIREMENTS)} took over 600 s: is the index reachable?"
        )
        raise
    if done.returncode != 0:
        output = f"{done.stdout}\n{done.stderr}"
        shutil.rmtree(venv, ignore_errors=True)
        if any(marker in output for marker in NETWORK_ERRORS):
            unavailable(
                f"cannot install {' '.join(REQUIREMENTS)}: the index is unreachable\n{output}"
            )
        pytest.fail(f"pip install {' '.join(REQUIREMENTS)} failed:\n{output}")


@pytest.fixture(scope="session")
def qinling_python() -> Iterator[Path]:
    """The interpreter of a virtualenv holding python-qinlingclient (built once, then cached)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"qinling-venv-{venv_key()}"
    complete = venv / "spinlet-requirements.txt"
    # One builder at a time (parallel test runs share the cache); the marker is written last.
    with open(root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (complete.exists() and venv_python(venv).exists()):
            started = time.monotonic()
            build_venv(venv)
            complete.write_text("\n".join(REQUIREMENTS) + "\n")
            print(f"built {venv} in {time.monotonic() - started:.1f}s")
    yield venv_python(venv)


@pytest.fixture(scope="session")
def other_runtime_images(docker_client: Any) -> None:
    """The images of the runtimes the driver uses besides the default, built when missing or
    stale (the driver's functions on them run at once)."""
    from spinlet.runtime.catalog import NODEJS20, PYTHON313
    from spinlet.runtime.images import ensure_runtime_image

    for entry in (NODEJS20, PYTHON313):
        ensure_runtime_image(docker_client, runtime=entry, progress=lambda line: None)


def client_env() -> dict[str, str]:
    """The environment minus what would steer the other interpreter or an OpenStack cloud."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "OS_", "QINLING_"))
    }


def run_driver(python: Path, server: Server, workdir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            str(python),
            str(DRIVER),
            "--url",
            server.url,
            "--workdir",
            str(workdir),
            "--functions",
            str(FUNCTIONS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=client_env(),
    )
    context = (
        f"--- driver stdout\n{done.stdout}\n--- driver stderr (HTTP exchanges)\n"
        f"{done.stderr[-6000:]}\n--- server log\n{server.log()[-3000:]}"
    )
    try:
        summary: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the driver printed no JSON (exit status {done.returncode})\n{context}")
    assert done.returncode == 0, (
        f"python-qinlingclient failed at step {summary.get('step')!r}: {summary.get('error')}\n"
        f"{context}"
    )
    return summary


def test_python_qinlingclient(
    qinling_python: Path, docker_server: Server, tmp_path: Path, other_runtime_images: None
) -> None:
    s = run_driver(qinling_python, docker_server, tmp_path)
    assert s["versions"]["python-qinlingclient"] == "5.1.1"
    assert s["versions"]["keystoneauth1"] == "5.18.1"

    # A function from a zip package (multipart, `code` as a JSON string with the md5sum).
    created = s["created"]
    function_id = created["id"]
    uuid.UUID(function_id)
    assert created["name"] == "qinling-hello"
    assert created["entry"] == "hello.main"
    assert created["runtime_id"] == s["runtime_id"]
    assert created["code"] == {"source": "package", "md5sum": s["package_md5"]}
    assert created["status"] == "available"
    assert s["found_id"] == function_id
    assert s["shown"]["id"] == function_id
    create_sent = s["sent"][0]
    assert (create_sent["method"], create_sent["content_type"]) == ("POST", "multipart/form-data")
    assert create_sent["fields"] == ["code", "entry", "name", "package", "runtime_id"]

    # A synchronous execution: the input was sent as a string holding JSON.
    execution = s["execution"]
    assert execution["status"] == "success", execution
    assert execution["result"] == {"greeting": "Hello, Qinling!"}
    assert execution["input"] == {"name": "Qinling"}
    assert execution["function_id"] == function_id
    assert execution["sync"] is True
    assert s["execution_shown"]["result"] == {"greeting": "Hello, Qinling!"}
    assert s["execution_shown"]["status"] == "success"
    assert s["log"] == "Hello, Qinling!\n"
    assert s["listed_execution_ids"] == [execution["id"]]

    # An asynchronous execution: accepted as `queued`, shown until final, then its log.
    async_sent = [e for e in s["sent"] if e["path"] == "/v1/executions"][1]
    assert (async_sent["method"], async_sent["status"]) == ("POST", 202)
    assert json.loads(async_sent["body"])["sync"] is False
    accepted = s["async_created"]
    assert (accepted["status"], accepted["sync"]) == ("queued", False), accepted
    assert accepted["function_id"] == function_id
    polled = s["async_polled"]
    assert polled[-1] == "success", polled
    assert set(polled[:-1]) <= {"queued", "running"}, polled
    finished = s["async_execution"]
    assert finished["id"] == accepted["id"]
    assert finished["result"] == {"greeting": "Hello, async!"}
    assert finished["input"] == {"name": "async"}
    assert finished["sync"] is False
    assert s["async_log"] == "Hello, async!\n"

    # Update of the description only: form data, the options not given dropped, not nulled.
    description_put, package_put = [e for e in s["sent"] if e["method"] == "PUT"][:2]
    assert description_put["method"] == "PUT"
    assert description_put["path"] == f"/v1/functions/{function_id}"
    assert description_put["content_type"] == "application/x-www-form-urlencoded"
    assert description_put["form"] == {"description": ["updated through python-qinlingclient"]}
    updated = s["updated"]
    assert updated["description"] == "updated through python-qinlingclient"
    for field in ("name", "entry", "runtime_id", "code", "cpu", "memory_size", "timeout"):
        assert updated[field] == created[field], field

    # Update with a new package and entry: multipart, `code` flattened into `source`.
    assert (package_put["method"], package_put["content_type"]) == ("PUT", "multipart/form-data")
    assert package_put["fields"] == ["entry", "package", "source"]
    repackaged = s["repackaged"]
    assert repackaged["entry"] == "echo.main"
    assert repackaged["code"]["md5sum"] == s["new_package_md5"]
    assert repackaged["description"] == "updated through python-qinlingclient"
    assert s["echo_execution"]["status"] == "success", s["echo_execution"]
    assert s["echo_execution"]["result"] == [1, 2, 3]
    assert s["downloaded_names"] == ["echo.py"]
    assert s["downloaded_md5"] == s["new_package_md5"]

    # The function's fault: a `failed` execution with its log, which ends with the traceback
    # (`openstack function execution log show` shows it, as Qinling's runtime did).
    failed = s["failed_execution"]
    assert failed["status"] == "failed"
    assert failed["status_reason"] == "exception"
    assert failed["error"]["type"] == "ValueError"
    assert "about to fail\nTraceback (most recent call last):\n" in s["failed_log"]
    assert s["failed_log"].rstrip().endswith("ValueError: something went wrong")

    # Errors reach the user through `faultstring`.
    assert s["not_found"]["type"] == "HTTPNotFound"
    assert s["not_found"]["text"] == (
        "function '00000000-0000-0000-0000-000000000000' not found (HTTP 404)"
    )

    # Versions: published, an unchanged publish gives the same version back, listed, shown.
    release_id = s["version_1"]["function_id"]
    assert (s["version_1"]["version_number"], s["version_1"]["description"]) == (1, "hello")
    assert s["version_1_again"]["id"] == s["version_1"]["id"]
    assert s["version_2"]["version_number"] == 2
    assert [v["version_number"] for v in s["versions_listed"]] == [1, 2]
    assert s["version_1_shown"] == s["version_1"]

    # An alias, executions through it (it picks the version), and a re-pointed alias.
    alias = s["alias"]
    assert (alias["name"], alias["function_id"], alias["function_version"]) == (
        "qinling-live",
        release_id,
        1,
    )
    through = s["alias_execution"]
    assert through["status"] == "success", through
    assert through["result"] == {"greeting": "Hello, alias!"}
    assert (through["function_alias"], through["function_version"]) == ("qinling-live", 1)
    assert s["alias_updated"]["function_version"] == 2
    assert s["alias_updated"]["description"] == ""
    assert s["alias_execution_2"]["result"] == [4, 5]
    assert s["alias_execution_2"]["function_version"] == 2
    assert s["version_execution"]["result"] == {"greeting": "Hello, v1!"}
    assert s["version_execution"]["function_version"] == 1
    assert [a["name"] for a in s["aliases_listed"]] == ["qinling-live"]
    assert s["alias_shown"] == s["alias_updated"]

    # What protects users, as the client shows it.
    assert s["version_in_use"]["type"] == "HTTPForbidden"
    assert "alias 'qinling-live'" in s["version_in_use"]["text"]
    assert s["function_with_alias"]["type"] == "HTTPForbidden"
    assert (s["versions_left"], s["aliases_left"]) == ([1], [])

    # A token_endpoint session works as well as the `none` plugin.
    assert function_id in s["token_client_function_ids"]

    # Every method of every manager was called, with what it sends: no field is refused.
    assert s["called"] == s["methods"]
    assert {"runtimes.create", "jobs.update", "webhooks.update", "function_aliases.update"} <= set(
        s["methods"]
    )
    other = s["other_methods"]
    runtime = other["runtimes.create"]["record"]
    assert (runtime["name"], runtime["is_public"], runtime["status"]) == (
        "qinling-rt",
        False,  # a runtime registered over the API is its project's own, whatever is sent
        "available",
    )
    assert other["runtimes.get"]["record"]["id"] == runtime["id"]
    # Its image is python3's: the pool it shares counts python3's containers too.
    pool = other["runtimes.get_pool"]["record"]
    assert pool["name"] == runtime["id"] and pool["capacity"]["total"] >= 0
    assert other["runtimes.delete"] == {"type": "ok", "record": None}
    # Workers, scaling and detaching: provisioned containers come and go as the client asks.
    for scaled in ("functions.scaleup", "functions.scaledown", "functions.detach"):
        assert other[scaled]["type"] == "ok", other[scaled]
    assert other["function_workers.list"]["type"] == "ok"
    up = s["workers_scaled_up"]  # with the warm containers its executions left, if any
    assert all(w["function_id"] == function_id and w["worker_name"] for w in up), up
    assert len([w for w in up if w["provisioned"]]) == 2, up
    assert len([w for w in s["workers_scaled_down"] if w["provisioned"]]) == 1
    assert [w for w in s["workers_detached"] if w["provisioned"]] == []
    # Jobs: created as the client sends them (the input a string holding JSON), listed, shown,
    # paused with the other fields changed, resumed with nulls for what was not given, deleted.
    job = other["jobs.create"]["record"]
    assert (job["name"], job["function_id"], job["pattern"]) == (
        "qinling-job",
        function_id,
        "*/5 * * * *",
    )
    assert (job["status"], job["count"], job["function_input"]) == ("running", 3, {"name": "job"})
    assert job["next_execution_time"] is not None
    assert s["jobs_listed"] == [job["id"]]
    assert other["jobs.get"]["record"]["id"] == job["id"]
    paused = other["jobs.update"]["record"]
    assert (paused["status"], paused["name"], paused["pattern"]) == (
        "paused",
        "renamed",
        "0 * * * *",
    )
    assert paused["function_input"] == {"name": "hourly"}
    resumed = s["job_resumed"]["record"]
    assert (resumed["status"], resumed["name"], resumed["pattern"]) == (
        "running",
        "renamed",
        "0 * * * *",
    )
    assert other["jobs.delete"] == {"type": "ok", "record": None}
    assert s["job_deleted_get"]["code"] == 404
    # A version's detach does not exist yet: its route is 404
    # (when they come, this test must see what the client sends accepted).
    missing = {name: result for name, result in other.items() if result["type"] != "ok"}
    assert {name: result["code"] for name, result in missing.items()} == {
        name: 404 for name in other if name == "function_versions.detach"
    }
    # Webhooks: created, listed, shown, updated (nulls unchanged) and deleted by the client;
    # their URL runs the function without a token, and is a 404 once deleted.
    hook = other["webhooks.create"]["record"]
    assert (hook["function_id"], hook["function_version"]) == (function_id, 0)
    assert hook["description"] == "hook" and hook["webhook_url"].endswith(
        f"/v1/webhooks/{hook['id']}/invoke"
    )
    assert [w["id"] for w in other["webhooks.list"]["records"]] == [hook["id"]]
    assert other["webhooks.get"]["record"] == hook
    updated = other["webhooks.update"]["record"]
    assert (updated["function_id"], updated["function_version"]) == (release_id, 1)
    assert updated["description"] == "hook"
    assert s["webhook_call"]["status"] == 202
    ran = s["webhook_execution"]
    assert (ran["id"], ran["status"]) == (s["webhook_call"]["body"]["execution_id"], "success")
    assert (ran["source"], ran["webhook_id"], ran["function_version"]) == (
        "webhook",
        hook["id"],
        1,
    )
    assert ran["result"] == {"greeting": "Hello, webhook!"}
    assert other["webhooks.delete"] == {"type": "ok", "record": None}
    assert s["webhook_deleted"]["code"] == 404
    assert all(entry["status"] != 400 for entry in s["sent"]), s["sent"]

    # Deletes.
    assert function_id not in s["functions_left"]
    assert release_id not in s["functions_left"]
    assert "not found (HTTP 404)" in s["deleted_not_found"]


def openstack(python: Path, server: Server, *args: str) -> str:
    """`openstack … ARGS` from the client's virtualenv, with no Keystone."""
    command = [
        str(python.parent / "openstack"),
        "--os-auth-type",
        "none",
        "--os-endpoint",
        server.url,
        "--qinling-url",
        server.url,
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=client_env())
    assert done.returncode == 0, (
        f"{' '.join(command)} exited with {done.returncode}\n--- stdout\n{done.stdout}\n"
        f"--- stderr\n{done.stderr}\n--- server log\n{server.log()[-3000:]}"
    )
    return done.stdout


def test_openstack_cli(qinling_python: Path, docker_server: Server) -> None:
    hello = str(FUNCTIONS / "hello.py")
    created = json.loads(
        openstack(
            qinling_python,
            docker_server,
            *("function", "create", "--name", "cli-hello", "--runtime", "python3"),
            *("--file", hello, "--entry", "hello.main", "-f", "json"),
        )
    )
    assert created["name"] == "cli-hello"
    assert created["code"]["source"] == "package"

    execution = json.loads(
        openstack(
            qinling_python,
            docker_server,
            *("function", "execution", "create", "--function", "cli-hello"),
            *("--input", '{"name": "CLI"}', "-f", "json"),
        )
    )
    assert execution["status"] == "success", execution
    assert execution["result"] == {"greeting": "Hello, CLI!"}

    log = openstack(
        qinling_python, docker_server, "function", "execution", "log", "show", execution["id"]
    )
    assert log == "Hello, CLI!\n"

    # `--async`: the record comes back `queued`; `execution show` until final, then the log.
    accepted = json.loads(
        openstack(
            qinling_python,
            docker_server,
            *("function", "execution", "create", "--function", "cli-hello", "--async"),
            *("--input", '{"name": "CLI async"}', "-f", "json"),
        )
    )
    assert (accepted["status"], accepted["sync"]) == ("queued", False), accepted
    finished = accepted
    deadline = time.monotonic() + 60
    while finished["status"] not in ("success", "failed", "error", "cancelled"):
        assert time.monotonic() < deadline, f"still {finished['status']!r} after 60 s"
        time.sleep(0.2)
        finished = json.loads(
            openstack(
                qinling_python,
                docker_server,
                *("function", "execution", "show", accepted["id"], "-f", "json"),
            )
        )
    assert finished["status"] == "success", finished
    assert finished["result"] == {"greeting": "Hello, CLI async!"}
    log = openstack(
        qinling_python, docker_server, "function", "execution", "log", "show", accepted["id"]
    )
    assert log == "Hello, CLI async!\n"

    updated = json.loads(
        openstack(
            qinling_python,
            docker_server,
            *("function", "update", "cli-hello", "--description", "from the CLI", "-f", "json"),
        )
    )
    assert updated["description"] == "from the CLI"
    assert updated["entry"] == "hello.main"

    # Versions and aliases: the CLI sends an alias update's version as a string.
    def show(*args: str) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(
            openstack(qinling_python, docker_server, "function", *args, "-f", "json")
        )
        return record

    assert show("version", "create", "cli-hello")["version_number"] == 1
    alias = show(
        *("alias", "create", "cli-live", "--function", "cli-hello", "--function-version", "1")
    )
    assert alias["function_version"] == 1
    assert show("alias", "update", "cli-live", "--function-version", "0")["function_version"] == 0
    through = show("execution", "create", "--function-alias", "cli-live", "--input", '"x"')
    assert (through["status"], through["function_alias"]) == ("success", "cli-live")
    openstack(qinling_python, docker_server, "function", "alias", "delete", "cli-live")

    # Jobs (`openstack job …`): created by function name, listed, paused, resumed, deleted.
    def job_command(*args: str) -> Any:
        return json.loads(openstack(qinling_python, docker_server, "job", *args, "-f", "json"))

    job = job_command(
        *("create", "--function", "cli-hello", "--name", "cli-job", "--pattern", "0 9 * * 1-5"),
        *("--function-input", '{"name": "cron"}', "--count", "3"),
    )
    assert (job["name"], job["status"], job["count"]) == ("cli-job", "running", 3)
    assert [j["Id"] for j in job_command("list")] == [job["id"]]
    assert job_command("update", job["id"], "--status", "paused")["status"] == "paused"
    assert job_command("update", job["id"], "--status", "running")["status"] == "running"
    assert job_command("show", job["id"])["pattern"] == "0 9 * * 1-5"
    openstack(qinling_python, docker_server, "job", "delete", job["id"])

    openstack(qinling_python, docker_server, "function", "delete", "cli-hello")
    listed = json.loads(openstack(qinling_python, docker_server, "function", "list", "-f", "json"))
    assert "cli-hello" not in [fn["Name"] for fn in listed]


def test_openstack_cli_workers(qinling_python: Path, docker_server: Server) -> None:
    """`openstack function scaleup|worker list|scaledown|detach`, as a user types them."""
    hello = str(FUNCTIONS / "hello.py")
    openstack(
        qinling_python,
        docker_server,
        *("function", "create", "--name", "cli-scaled", "--runtime", "python3"),
        *("--file", hello, "--entry", "hello.main"),
    )

    def listed() -> list[dict[str, Any]]:
        table = openstack(
            qinling_python, docker_server, "function", "worker", "list", "cli-scaled", "-f", "json"
        )
        rows: list[dict[str, Any]] = json.loads(table)
        return rows

    said = openstack(qinling_python, docker_server, "function", "scaleup", "cli-scaled")
    assert "Request to scale up function cli-scaled has been accepted." in said
    openstack(qinling_python, docker_server, "function", "scaleup", "cli-scaled", "--count", "2")
    rows = listed()
    assert len(rows) == 3 and all(row["Worker_name"] for row in rows), rows
    said = openstack(
        qinling_python, docker_server, "function", "scaledown", "cli-scaled", "--count", "2"
    )
    assert "Request to scale down function cli-scaled has been accepted." in said
    assert len(listed()) == 1
    said = openstack(qinling_python, docker_server, "function", "detach", "cli-scaled")
    assert "Request to detach function cli-scaled has been accepted." in said
    assert listed() == []
    openstack(qinling_python, docker_server, "function", "delete", "cli-scaled")


def test_python_qinlingclient_other_runtimes(
    qinling_python: Path, docker_server: Server, tmp_path: Path, other_runtime_images: None
) -> None:
    """Functions created with the `runtime_id` of Node.js 20 and of Python 3.13 run."""
    s = run_driver(qinling_python, docker_server, tmp_path)
    runs = s["other_runtimes"]
    runtimes = {rt["name"]: rt["id"] for rt in s["runtimes"]}
    for name in ("nodejs20", "python3.13"):
        assert runs[name]["runtime_id"] == runtimes[name]
        assert runs[name]["created"]["runtime_id"] == runtimes[name]
        assert runs[name]["created"]["status"] == "available"
    node = runs["nodejs20"]["execution"]
    assert node["status"] == "success", node
    assert node["result"]["greeting"] == "hello Node"
    assert node["result"]["node"].startswith("v20."), node["result"]
    assert node["result"]["executionId"] == node["id"]
    assert runs["nodejs20"]["log"] == "hello Node from qinling-nodejs20 v0\n"
    python = runs["python3.13"]["execution"]
    assert python["status"] == "success", python
    assert python["result"] == {"greeting": "Hello, Python 3.13!"}
    assert runs["python3.13"]["log"] == "Hello, Python 3.13!\n"
    assert s["functions_left"] == []
