"""`spinlet bench --quick` runs end to end (a smoke test: its timings are not judged here)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.acceptance.conftest import spinlet_bin
from tests.conftest import REPO

pytestmark = pytest.mark.docker

MEASURES = (
    "bare docker create+start+ready",
    "(a) floor: warm container, direct",
    "(b) naive: docker run per call",
    "(c) spinlet warm sync, concurrency 1",
    "(c) spinlet throughput, 4 clients",
    "(d) first call, stem cell ready",
    "(d) first call, no stem cell",
)


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [spinlet_bin(), "bench", "--quick", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quick_bench_reports_every_measure(docker_client: object, runtime_image_tag: str) -> None:
    done = bench("--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    rows = {row["measure"]: row for row in report["results"]}
    assert tuple(rows) == MEASURES
    for row in rows.values():
        assert row["n"] >= 1 and 0 < row["p50_ms"] <= row["p99_ms"], row
    # The first calls of new functions with the default limits took the stem cells kept for
    # them; every throughput call was recorded (none refused).
    assert rows["(d) first call, stem cell ready"]["start_kinds"]["stem"] >= 1
    assert rows["(c) spinlet throughput, 4 clients"]["rejected_429"] == 0
    assert set(report["ratios"]) == {
        "warm p50 / floor p50",
        "warm p50 / naive p50",
        "first call with stem / bare start",
        "first call without stem / bare start",
    }
    assert report["options"]["function_concurrency"] == 8


def test_quick_bench_measures_a_nodejs_runtime(
    docker_client: object, runtime_image_tag: str
) -> None:
    """`--runtime nodejs20`: the same measures, of a Node.js echo on the Node.js image."""
    from spinlet.runtime.catalog import NODEJS20
    from spinlet.runtime.images import ensure_runtime_image

    ensure_runtime_image(docker_client, runtime=NODEJS20, progress=lambda line: None)
    done = bench("--json", "--runtime", "nodejs20")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["options"]["runtime"] == "nodejs20"
    assert report["options"]["image"] == NODEJS20.image
    assert list(report["runtimes"]) == ["nodejs20"]
    rows = {row["measure"]: row for row in report["runtimes"]["nodejs20"]["results"]}
    assert tuple(rows) == MEASURES
    for row in rows.values():
        assert row["n"] >= 1 and 0 < row["p50_ms"] <= row["p99_ms"], row
    assert rows["(d) first call, stem cell ready"]["start_kinds"]["stem"] >= 1
    assert report["across_runtimes"] == {}


def test_bench_refuses_an_unknown_runtime() -> None:
    done = bench("--runtime", "cobol85")
    assert done.returncode == 2
    assert "'cobol85' is not a shipped runtime" in done.stderr
