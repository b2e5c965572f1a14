"""A `spinlet serve` process for benchmarks, with its own data dir and port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from spinlet.paths import project_root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"spinlet serve exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("spinlet serve did not become ready within 60 s")


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=project_root()
        )


@asynccontextmanager
async def bench_server(env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """Start a node on a free port; yields its URL and stops it (and its containers) after."""
    with tempfile.TemporaryDirectory(prefix="spinlet-bench-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "serve.log"
        spinlet = Path(sys.executable).parent / "spinlet"
        command = [str(spinlet), "serve", "--port", str(port), "--data-dir", f"{tmp}/data"]
        node_env = {
            **os.environ,
            "SPINLET_NODE_ID": f"bench-{uuid.uuid4().hex[:8]}",
            **(env or {}),
        }
        process = await asyncio.to_thread(_start, [*command, "--no-build"], node_env, log)
        try:
            await asyncio.to_thread(_wait_ready, url, process, log)
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(process.wait, 60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
