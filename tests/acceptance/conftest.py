"""A real `spinlet serve` process, driven from outside as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, unavailable

#: A function that leaves a mark on the host each time it really starts (run it on the process
#: backend): the proof, counted afterwards, that nothing ran twice.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    data_dir: Path
    node_id: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPINLET_URL": self.url,
            "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def spinlet_bin() -> str:
    return str(Path(sys.executable).parent / "spinlet")


def start_server(
    tmp: Path,
    backend: str,
    *,
    port: int | None = None,
    node_id: str | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """Start `spinlet serve` with its data in `tmp` (start again with the same to restart)."""
    port = port or free_port()
    node_id = node_id or f"acc-{uuid.uuid4().hex[:8]}"
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "serve.log"
    env = {**os.environ, "SPINLET_NODE_ID": node_id, **(env or {})}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                spinlet_bin(),
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--backend",
                backend,
                "--no-build",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    server = Server(f"http://127.0.0.1:{port}", data_dir, node_id, process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"spinlet serve exited:\n{server.log()}")
        try:
            urllib.request.urlopen(f"{server.url}/health", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"spinlet serve did not become ready:\n{server.log()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="module")
def docker_server(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[Server]:
    """`spinlet serve` on Docker (the runtime image must exist: tests/run.sh builds it). Its
    pip resolves dependencies from the session's wheelhouse only, as an air-gapped node's."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get(os.environ.get("SPINLET_RUNTIME_IMAGE", "spinlet/runtime-python3:1"))
        client.close()
    except Exception as exc:  # any failure to reach Docker or find the image
        unavailable(f"Docker or the runtime image is not available: {exc}")
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
    server = start_server(tmp_path_factory.mktemp("server"), "docker", env=offline)
    yield server
    stop_server(server)
    import docker

    client = docker.from_env()
    left = client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"spinlet.node={server.node_id}"}
    )
    client.close()
    assert not left, f"containers left behind by {server.node_id}: {left}"
