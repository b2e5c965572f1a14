"""`spinlet jobs …` and `spinlet executions create --schedule` against a real server (functions
as processes): a job runs once and is done; one is paused, resumed, cancelled and deleted; a
scheduled execution waits for its time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.acceptance.conftest import Server, start_server, stop_server
from tests.acceptance.test_cli_releases import as_json, spinlet
from tests.conftest import FUNCTIONS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"), "process")
    spinlet(server, "functions", "create", "echo", str(FUNCTIONS / "echo.py"))
    yield server
    stop_server(server)


def until(check: Any, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s"
        time.sleep(0.2)


def test_a_job_from_the_command_line_runs_once_and_is_done(server: Server) -> None:
    job = as_json(
        server,
        *("jobs", "create", "echo", "--pattern", "* * * * * *", "--count", "1"),
        *("--input", '{"from": "cli"}', "--name", "once"),
    )
    assert (job["name"], job["status"], job["count"]) == ("once", "running", 1)
    until(lambda: as_json(server, "jobs", "get", job["id"])["status"] == "done")
    [execution] = as_json(server, "executions", "list", "--job", job["id"])
    finished = as_json(server, "executions", "get", execution["id"], "--wait")
    assert (finished["result"], finished["source"]) == ({"from": "cli"}, "job")
    assert job["id"] in spinlet(server, "jobs", "list").stdout


def test_a_job_is_paused_resumed_cancelled_and_deleted(server: Server) -> None:
    job = as_json(server, "jobs", "create", "echo", "--pattern", "0 9 * * 1-5")
    assert as_json(server, "jobs", "pause", job["id"])["status"] == "paused"
    assert as_json(server, "jobs", "resume", job["id"])["status"] == "running"
    assert as_json(server, "jobs", "cancel", job["id"])["status"] == "cancelled"
    failed = spinlet(server, "jobs", "resume", job["id"], ok=False)
    assert "cancelled" in failed.stderr
    assert spinlet(server, "jobs", "delete", job["id"]).stdout == f"deleted {job['id']}\n"
    bad = spinlet(server, "jobs", "create", "echo", "--pattern", "every day", ok=False)
    assert "not a cron pattern" in bad.stderr


def test_a_scheduled_execution_from_the_command_line(server: Server) -> None:
    when = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    out = spinlet(server, "executions", "create", "echo", "--input", "7", "--schedule", when)
    execution_id = out.stdout.strip()
    record = as_json(server, "executions", "get", execution_id)
    assert record["status"] in ("scheduled", "queued", "running", "success")
    finished = as_json(server, "executions", "get", execution_id, "--wait")
    assert (finished["status"], finished["result"]) == ("success", 7)
    assert datetime.fromisoformat(finished["started_at"]) >= datetime.fromisoformat(when)


def test_the_sdk_drives_jobs_and_schedules(server: Server) -> None:
    from spinlet.client import ApiError, Client

    with Client(server.url) as api:
        job = api.jobs.create("echo", "0 9 * * 1-5", {"n": 1}, name="sdk", timezone="Asia/Tokyo")
        assert (job["timezone"], job["function_input"]) == ("Asia/Tokyo", {"n": 1})
        assert api.jobs.pause(job["id"])["status"] == "paused"
        assert api.jobs.resume(job["id"])["status"] == "running"
        assert api.jobs.update(job["id"], pattern="0 10 * * *")["pattern"] == "0 10 * * *"
        assert job["id"] in [j["id"] for j in api.jobs.list()]
        assert api.jobs.cancel(job["id"])["status"] == "cancelled"
        api.jobs.delete(job["id"])
        with pytest.raises(ApiError) as missing:
            api.jobs.get(job["id"])
        assert missing.value.status == 404

        when = datetime.now(UTC) + timedelta(seconds=1)
        record = api.executions.create("echo", "sdk", schedule=when)
        assert (record["status"], record["sync"]) == ("scheduled", False)
        assert api.executions.get(record["id"], wait=True)["result"] == "sdk"
