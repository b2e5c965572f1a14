"""The README's first command: from this checkout to a server that has invoked `hello`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import free_port
from tests.conftest import REPO

pytestmark = pytest.mark.docker

INVOKE = """[quickstart] $ spinlet invoke hello --input '{"name": "Spinlet"}'"""


def test_quickstart_starts_spinlet_and_invokes_hello(
    tmp_path: Path, docker_client: object, runtime_image_tag: str
) -> None:
    data_dir = tmp_path / "spinlet"
    env = {
        **os.environ,
        "SPINLET_DATA_DIR": str(data_dir),
        "SPINLET_URL": f"http://127.0.0.1:{free_port()}",
        "SPINLET_NODE_ID": f"quickstart-{os.getpid()}",
    }
    try:
        done = subprocess.run(
            ["bash", str(REPO / "deploy" / "quickstart.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        lines = done.stdout.splitlines()
        invoked = lines.index('[quickstart] $ spinlet invoke hello --input \'{"name": "Spinlet"}\'')
        assert lines[invoked + 1] == '{"greeting": "Hello, Spinlet!"}'
        assert lines[-1].startswith(f"[quickstart] Spinlet is running at {env['SPINLET_URL']}")
    finally:
        pid_file = data_dir / "serve.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGINT)
            for _ in range(150):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
