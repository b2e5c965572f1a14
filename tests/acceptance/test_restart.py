"""A server killed with SIGKILL under load loses no accepted execution and runs none twice."""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import start_server, stop_server
from tests.helpers import MARKING

COUNT = 200


@pytest.mark.parametrize("retries", [0, 1])
def test_sigkill_mid_load_then_restart(tmp_path: Path, retries: int) -> None:
    marks = tmp_path / "marks.txt"
    marks.touch()
    env = {"SPINLET_WORKERS": "4"}
    server = start_server(tmp_path, "process", env=env)
    accepted: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            package = {"package": ("marking.py", MARKING.encode())}
            created = http.post(
                "/v1/functions",
                data={"name": "marking", "retries": str(retries)},
                files=package,
            )
            assert created.status_code == 201, created.text
            started = time.monotonic()
            for _ in range(COUNT):
                response = http.post(
                    "/v1/executions",
                    json={
                        "function_id": "marking",
                        "sync": False,
                        "input": {"marks": str(marks), "seconds": 0.05},
                    },
                )
                assert response.status_code == 202, response.text
                accepted.append(response.json()["id"])
            enqueue_rate = COUNT / (time.monotonic() - started)
            # Let some run, then kill the server in the middle of the work.
            while len(marks.read_text().splitlines()) < 20:
                time.sleep(0.02)
    finally:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    ran_before_kill = len(marks.read_text().splitlines())
    assert ran_before_kill < COUNT, "everything ran before the kill; the test proves nothing"

    restarted = start_server(
        tmp_path, "process", port=int(server.url.rsplit(":", 1)[1]), node_id=server.node_id, env=env
    )
    try:
        with httpx.Client(base_url=restarted.url, timeout=60) as http:
            final = {}
            for execution_id in accepted:
                response = http.get(f"/v1/executions/{execution_id}", params={"wait": 30})
                assert response.status_code == 200, f"acknowledged {execution_id} is gone"
                record = response.json()
                final[execution_id] = record
                assert record["status"] in ("success", "error"), record
                if record["status"] == "error":
                    assert record["status_reason"] == "lost"
    finally:
        stop_server(restarted)

    runs = collections.Counter(marks.read_text().split())
    assert set(runs) <= set(accepted)
    statuses = collections.Counter(r["status"] for r in final.values())
    if retries == 0:
        # What was running at the kill is lost; everything else ran exactly once.
        assert max(runs.values()) == 1, "an execution ran twice"
        assert statuses["success"] + statuses["error"] == COUNT
        assert 1 <= statuses["error"] <= 4  # at most one per worker was running
        assert all(runs[i] == 1 for i, r in final.items() if r["status"] == "success")
    else:
        # What was running at the kill ran again after the restart, and succeeded.
        assert statuses["success"] == COUNT
        assert 1 <= sum(1 for n in runs.values() if n == 2) <= 4
        # An attempt is a claim: one claimed just before the kill may not have reached the
        # function's first line, so it ran once in two attempts. None ran more than it was tried.
        attempts = {i: r["attempts"] for i, r in final.items()}
        assert all(1 <= runs[i] <= attempts[i] <= 2 for i in accepted)
        assert 1 <= sum(1 for n in attempts.values() if n == 2) <= 4  # one per worker, at most
    print(f"enqueue rate {enqueue_rate:.0f}/s; {ran_before_kill} ran before the kill; {statuses}")
