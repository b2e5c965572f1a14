"""Fixtures of the runtime-backend tests: each backend kind, a short socket root, a backend."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from spinlet.runtime.pool import PoolBackend
from tests.integration.runtime.backends import Target
from tests.wheels import wheel


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def target(request: pytest.FixtureRequest, socket_root: Path) -> Target:
    """Each backend kind in turn (the Docker one needs the engine and the runtime image)."""
    if request.param == "docker":
        docker: Target = request.getfixturevalue("docker_target")
        return docker
    return Target("process", _node_id(), socket_root, "spinlet/runtime-python3:1")


@pytest.fixture
def docker_target(docker_client: Any, runtime_image_tag: str, socket_root: Path) -> Target:
    """The Docker backend kind only, for what only it can show."""
    return Target("docker", _node_id(), socket_root, runtime_image_tag, docker_client)


def _node_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def socket_root() -> Iterator[Path]:
    # Unix socket paths are short (107 bytes): not under the long per-test tmp_path.
    root = Path(tempfile.mkdtemp(prefix="spl-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def backend(target: Target) -> AsyncIterator[PoolBackend]:
    backend = target.make(keep_alive=60.0)
    await backend.open()
    yield backend
    await backend.close()
    assert await target.leftovers() == []
    assert target.code_dirs() == []


@pytest.fixture(scope="session")
def yaml_wheel(wheelhouse: Path) -> Path:
    """PyYAML's compiled wheel for the runtime (CPython 3.11, manylinux x86_64)."""
    return wheel(wheelhouse, "pyyaml")
