"""The node image (deploy/build-node-image.sh, deploy/node/Dockerfile): built without any
registry or index inside, two nodes run from it on one PostgreSQL, drive the host's Docker
engine, answer for each other and leave no container behind."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import free_port
from tests.conftest import FUNCTIONS, REPO

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def node_image(docker_client: Any, runtime_image_tag: str) -> Iterator[str]:
    tag = f"spinlet-test/node:{uuid.uuid4().hex[:8]}"
    built = subprocess.run(
        ["bash", str(REPO / "deploy" / "build-node-image.sh"), tag],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert built.stdout.strip() == tag
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """The sockets' directory, at the same (short) path in the nodes and on the host."""
    path = Path(tempfile.mkdtemp(prefix="spn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_node(
    docker_client: Any, image: str, node_id: str, database_url: str, run_dir: Path
) -> tuple[Any, str]:
    port = free_port()
    container = docker_client.containers.run(
        image,
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--no-build"],
        name=f"spinlet-test-{node_id}",
        detach=True,
        network_mode="host",  # reaches the host's PostgreSQL on loopback
        environment={
            "SPINLET_NODE_ID": node_id,
            "SPINLET_DATABASE_URL": database_url,
            "SPINLET_RUN_DIR": str(run_dir),
            "SPINLET_STEM_CELLS": "0",
        },
        volumes={
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
            str(run_dir): {"bind": str(run_dir), "mode": "rw"},
        },
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return container, url
        except httpx.HTTPError:
            time.sleep(0.2)
    logs = container.logs().decode(errors="replace")
    container.remove(force=True)
    raise AssertionError(f"node {node_id} did not become ready:\n{logs[-3000:]}")


def test_two_nodes_from_the_image_share_one_postgres(
    docker_client: Any, node_image: str, fresh_postgres: str, run_dir: Path
) -> None:
    ids = [f"img-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    nodes = [start_node(docker_client, node_image, i, fresh_postgres, run_dir) for i in ids]
    (_, first_url), (_, second_url) = nodes
    try:
        with httpx.Client(timeout=60) as http:
            package = {"package": ("hello.py", (FUNCTIONS / "hello.py").read_bytes())}
            created = http.post(f"{first_url}/v1/functions", data={"name": "hello"}, files=package)
            assert created.status_code == 201, created.text
            # Uploaded to one node, run by the other, in a real container of the host's engine.
            ran = http.post(
                f"{second_url}/v1/executions",
                json={"function_id": "hello", "input": {"name": "image"}},
            )
            assert ran.status_code == 201, ran.text
            record = ran.json()
            assert (record["status"], record["result"]) == (
                "success",
                {"greeting": "Hello, image!"},
            )
            assert record["node_id"] == ids[1] and record["start_kind"] == "cold"
            assert http.get(f"{first_url}/v1/executions/{record['id']}/log").text == (
                "Hello, image!\n"
            )
            queued = http.post(
                f"{first_url}/v1/executions",
                json={"function_id": "hello", "input": {"name": "async"}, "sync": False},
            )
            assert queued.status_code == 202, queued.text
            done = http.get(
                f"{second_url}/v1/executions/{queued.json()['id']}", params={"wait": 60}
            ).json()
            assert (done["status"], done["result"]) == ("success", {"greeting": "Hello, async!"})
            labelled = docker_client.containers.list(
                ignore_removed=True, filters={"label": f"spinlet.node={ids[1]}"}
            )
            assert labelled, "the node's function containers run on the host's engine"
    finally:
        for container, _ in nodes:
            container.stop(timeout=30)  # SIGTERM: the node removes its containers
            logs = container.logs().decode(errors="replace")
            container.remove(force=True)
            assert "Traceback" not in logs, logs[-3000:]
    for node_id in ids:
        left = docker_client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"spinlet.node={node_id}"}
        )
        assert left == [], f"containers left behind by {node_id}"
