"""The runtime image: choosing a base, building it, and serving in a hardened container.

The tests marked `docker` use the real engine; the others drive `spinlet.runtime.images` with a
fake client to cover how the base is chosen (present, pulled, bootstrapped) without Docker.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import stat
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from spinlet.errors import RuntimeBackendError
from spinlet.runtime import images
from spinlet.runtime.catalog import PYTHON313, TRIXIE
from spinlet.runtime.images import (
    BOOTSTRAP_BASE,
    DEFAULT_BASE,
    DEFAULT_RUNTIME_IMAGE,
    SOURCE_LABEL,
    ensure_runtime_image,
    image_present,
    source_hash,
)

TEST_LABEL = {"spinlet.test": "1"}


# --- with a fake engine ------------------------------------------------------------------------


class FakeEngine:
    """Just enough of `docker.DockerClient` for `ensure_runtime_image`."""

    def __init__(self, *present: str, pull: str = "fail") -> None:
        self.present = set(present)
        self.labels = {ref: {SOURCE_LABEL: source_hash()} for ref in present}
        self.pull_behaviour = pull  # ok | fail | hang
        self.pulled: list[str] = []
        self.builds: list[dict[str, Any]] = []
        self.build_items: list[dict[str, Any]] = [
            {"stream": "Step 1/7 : ARG BASE\n"},
            {"stream": "Successfully built 0123abcd\n"},
        ]
        self.images = SimpleNamespace(get=self._get, pull=self._pull)
        self.api = SimpleNamespace(build=self._build)

    def _get(self, ref: str) -> Any:
        if ref not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return SimpleNamespace(id=f"sha256:{ref}", labels=self.labels.get(ref, {}))

    def _pull(self, repository: str, tag: str) -> Any:
        ref = f"{repository}:{tag}"
        self.pulled.append(ref)
        if self.pull_behaviour == "hang":
            time.sleep(5)
        if self.pull_behaviour != "ok":
            raise docker.errors.APIError("500 Server Error", explanation="no such host")
        self.present.add(ref)
        return self._get(ref)

    def _build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.builds.append(kwargs)
        yield from self.build_items
        self.present.add(kwargs["tag"])
        self.labels[kwargs["tag"]] = kwargs.get("labels") or {}


@pytest.fixture
def no_base_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPINLET_RUNTIME_BASE", raising=False)


def patch_bootstrap(monkeypatch: pytest.MonkeyPatch, engine: FakeEngine) -> list[str]:
    """Replace the debootstrap run by one that makes the image appear in `engine`."""
    calls: list[str] = []

    def bootstrap(
        tag: str, *, offline: Any, mirror: str | None = None, progress: Any = print
    ) -> None:
        calls.append(f"{tag} {offline.suite} {','.join(offline.packages)}")
        engine.present.add(tag)

    monkeypatch.setattr(images, "bootstrap_base", bootstrap)
    return calls


def ensure(engine: FakeEngine, **kwargs: Any) -> tuple[str, list[str]]:
    lines: list[str] = []
    image_id = ensure_runtime_image(engine, progress=lines.append, **kwargs)
    return image_id, lines


def test_present_image_is_not_rebuilt(no_base_env: None) -> None:
    engine = FakeEngine(DEFAULT_RUNTIME_IMAGE)
    assert ensure(engine) == (f"sha256:{DEFAULT_RUNTIME_IMAGE}", [])
    assert engine.builds == []


def test_an_image_built_from_other_sources_is_rebuilt(no_base_env: None) -> None:
    engine = FakeEngine(DEFAULT_RUNTIME_IMAGE, DEFAULT_BASE)
    engine.labels[DEFAULT_RUNTIME_IMAGE] = {SOURCE_LABEL: "stale"}
    _, lines = ensure(engine)
    assert [b["tag"] for b in engine.builds] == [DEFAULT_RUNTIME_IMAGE]
    assert engine.labels[DEFAULT_RUNTIME_IMAGE] == {
        SOURCE_LABEL: source_hash(),
        images.RUNTIME_LABEL: "python3",
    }
    assert any("built from other sources" in line for line in lines)


def test_rebuild_on_a_present_base(no_base_env: None) -> None:
    engine = FakeEngine(DEFAULT_RUNTIME_IMAGE, DEFAULT_BASE)
    image_id, lines = ensure(engine, rebuild=True)
    assert image_id == f"sha256:{DEFAULT_RUNTIME_IMAGE}"
    [build] = engine.builds
    assert build["tag"] == DEFAULT_RUNTIME_IMAGE
    assert build["buildargs"] == {"BASE": DEFAULT_BASE}
    assert build["pull"] is False
    assert Path(build["path"]).name == "python"
    assert engine.pulled == []
    assert "Step 1/7 : ARG BASE" in lines
    assert lines[-1].startswith(f"built {DEFAULT_RUNTIME_IMAGE}")


def test_missing_base_is_pulled(no_base_env: None) -> None:
    engine = FakeEngine(pull="ok")
    _, lines = ensure(engine)
    assert engine.pulled == [DEFAULT_BASE]
    assert engine.builds[0]["buildargs"] == {"BASE": DEFAULT_BASE}
    assert (
        lines[0]
        == f"runtime image {DEFAULT_RUNTIME_IMAGE} is missing: building it from {DEFAULT_BASE}"
    )


def test_unpullable_base_falls_back_to_the_bootstrapped_one(no_base_env: None) -> None:
    engine = FakeEngine(BOOTSTRAP_BASE)
    _, lines = ensure(engine)
    assert engine.pulled == [DEFAULT_BASE]
    assert engine.builds[0]["buildargs"] == {"BASE": BOOTSTRAP_BASE}
    assert any("cannot pull" in line and "no such host" in line for line in lines)


def test_missing_bootstrapped_base_is_bootstrapped(
    no_base_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    bootstrapped = patch_bootstrap(monkeypatch, engine)
    ensure(engine)
    assert bootstrapped == [f"{BOOTSTRAP_BASE} bookworm python3"]
    assert engine.builds[0]["buildargs"] == {"BASE": BOOTSTRAP_BASE}


def test_bootstrap_base_is_never_pulled(no_base_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(pull="ok")
    bootstrapped = patch_bootstrap(monkeypatch, engine)
    ensure(engine, base=BOOTSTRAP_BASE)
    assert engine.pulled == []
    assert bootstrapped == [f"{BOOTSTRAP_BASE} bookworm python3"]


def test_python313_is_built_on_the_trixie_base_that_is_here(
    no_base_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(TRIXIE.tag)
    bootstrapped = patch_bootstrap(monkeypatch, engine)
    image_id, lines = ensure(engine, runtime=PYTHON313)
    assert image_id == f"sha256:{PYTHON313.image}"
    assert engine.pulled == ["python:3.13-slim-trixie"]
    assert bootstrapped == []  # reused
    [build] = engine.builds
    assert (build["tag"], build["buildargs"]) == (PYTHON313.image, {"BASE": "spinlet/base:trixie"})
    assert Path(build["path"]).name == "python"
    assert build["labels"] == {SOURCE_LABEL: source_hash("python"), "spinlet.runtime": "python3.13"}
    assert f"base image {TRIXIE.tag} is present" in lines
    # The default runtime's base setting is not another runtime's.
    monkeypatch.setenv("SPINLET_RUNTIME_BASE", "example/python:3.11")
    assert ensure(engine, runtime=PYTHON313)[1] == []


def test_a_missing_trixie_base_is_bootstrapped_with_python_and_nodejs(
    no_base_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(pull="fail")
    bootstrapped = patch_bootstrap(monkeypatch, engine)
    ensure(engine, runtime=PYTHON313)
    assert bootstrapped == ["spinlet/base:trixie trixie python3,nodejs"]


def test_base_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINLET_RUNTIME_BASE", "example/python:3.11")
    engine = FakeEngine("example/python:3.11")
    ensure(engine)
    assert engine.builds[0]["buildargs"] == {"BASE": "example/python:3.11"}
    engine = FakeEngine("example/python:3.11", "other/base:1")
    ensure(engine, base="other/base:1")  # the argument wins
    assert engine.builds[0]["buildargs"] == {"BASE": "other/base:1"}


def test_hanging_pull_is_abandoned(no_base_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "PULL_TIMEOUT", 0.1)
    engine = FakeEngine(BOOTSTRAP_BASE, pull="hang")
    started = time.monotonic()
    _, lines = ensure(engine)
    assert time.monotonic() - started < 2
    assert any("no answer within 0.1 s" in line for line in lines)


def test_build_error_is_a_backend_error(no_base_env: None) -> None:
    engine = FakeEngine(DEFAULT_BASE)
    engine.build_items = [
        {"stream": "Step 1/7 : ARG BASE\n"},
        {"error": "boom", "errorDetail": {"message": "COPY failed: server.py not found"}},
    ]
    with pytest.raises(RuntimeBackendError, match=r"COPY failed: server\.py not found"):
        ensure(engine)


def fake_script(home: Path, body: str) -> None:
    script = home / "deploy" / "bootstrap-base-image.sh"
    script.parent.mkdir(parents=True)
    script.write_text("#!/usr/bin/env bash\n" + body)


def test_bootstrap_base_streams_the_script_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_script(tmp_path, 'echo "[bootstrap] working on $2" >&2\necho "$2"\n')
    monkeypatch.setenv("SPINLET_HOME", str(tmp_path))
    lines: list[str] = []
    images.bootstrap_base("throwaway/base:1", progress=lines.append)
    assert lines[1:3] == ["[bootstrap] working on throwaway/base:1", "throwaway/base:1"]


def test_bootstrap_base_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_script(tmp_path, 'echo "[bootstrap] debootstrap is not installed" >&2\nexit 1\n')
    monkeypatch.setenv("SPINLET_HOME", str(tmp_path))
    with pytest.raises(RuntimeBackendError, match=r"\(exit status 1\): .*not installed"):
        images.bootstrap_base("throwaway/base:1", progress=lambda line: None)


# --- with the real engine ----------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        super().__init__("runtime", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def call(conn: UnixHTTPConnection, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def runtime_image(docker_client: Any) -> str:
    return ensure_runtime_image(docker_client, progress=lambda line: None)


@contextmanager
def hardened_container(client: Any, image: str) -> Iterator[tuple[Any, Path]]:
    """A container as the node makes them: its runtime socket in a bind-mounted host dir."""
    socket_dir = Path(tempfile.mkdtemp(prefix="spinlet-rt-"))  # short: sun_path is 108 bytes
    os.chmod(socket_dir, 0o777)
    container = None
    try:
        container = client.containers.run(
            image,
            detach=True,
            user="10001:10001",
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            network_mode="none",
            pids_limit=64,
            mem_limit="128m",
            volumes={str(socket_dir): {"bind": "/run/spinlet", "mode": "rw"}},
            labels=TEST_LABEL,
        )
        yield container, socket_dir / "rt.sock"
    finally:
        if container is not None:
            container.remove(force=True)
        shutil.rmtree(socket_dir, ignore_errors=True)


def wait_healthy(socket_path: Path, within: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        conn = UnixHTTPConnection(socket_path, timeout=2)
        try:
            status, reply = call(conn, "GET", "/health")
            assert status == 200
            return dict(reply)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
        finally:
            conn.close()


@pytest.mark.docker
def test_runtime_image_is_built_and_labelled(docker_client: Any, runtime_image: str) -> None:
    image = docker_client.images.get(DEFAULT_RUNTIME_IMAGE)
    assert image.id == runtime_image
    assert image.labels["spinlet.runtime.protocol"] == str(images.RUNTIME_PROTOCOL)
    assert image.labels["spinlet.runtime"] == "python3"
    config = image.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["python3", "/opt/spinlet/server.py"]
    assert "SPINLET_SOCKET=/run/spinlet/rt.sock" in config["Env"]
    assert image_present(docker_client, DEFAULT_RUNTIME_IMAGE)
    assert not image_present(docker_client, f"spinlet/absent:{uuid.uuid4().hex}")


@pytest.mark.docker
def test_ensure_runtime_image_returns_the_present_image(
    docker_client: Any, runtime_image: str
) -> None:
    lines: list[str] = []
    assert ensure_runtime_image(docker_client, progress=lines.append) == runtime_image
    assert lines == []


@pytest.mark.docker
def test_missing_image_is_built(docker_client: Any, runtime_image: str) -> None:
    tag = f"spinlet/runtime-python3:test-{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    try:
        image_id = ensure_runtime_image(docker_client, image=tag, progress=lines.append)
        assert image_id == docker_client.images.get(tag).id
        assert lines[0].startswith(f"runtime image {tag} is missing: building it from ")
        assert lines[-1].startswith(f"built {tag}")
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag)


@pytest.mark.docker
def test_hardened_container_serves_health_over_the_socket(
    docker_client: Any, runtime_image: str
) -> None:
    with hardened_container(docker_client, runtime_image) as (_, socket_path):
        assert wait_healthy(socket_path) == {
            "protocol": 1,
            "protocols": [1, 2],
            "initialized": False,
            "features": ["code_dir", "layer_dir"],
        }
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        assert socket_path.stat().st_mode & 0o777 == 0o666


CODE = """
import os, socket, subprocess, sys

def main(event, context):
    print("hello from", os.getuid())
    subprocess.run(["echo", "from a child"], check=True)
    os.write(2, b"from fd 2\\n")
    with open("/tmp/scratch", "w") as f:
        f.write("ok")
    try:
        open("/opt/spinlet/x", "w")
        root = "writable"
    except OSError:
        root = "read-only"
    return {"root": root, "interfaces": sorted(n for _, n in socket.if_nameindex()),
            "remaining": context.remaining_time() > 0}
"""


@pytest.mark.docker
def test_hardened_container_runs_a_function(docker_client: Any, runtime_image: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", CODE)
    with hardened_container(docker_client, runtime_image) as (_, socket_path):
        wait_healthy(socket_path)
        conn = UnixHTTPConnection(socket_path)
        try:
            code = base64.b64encode(buffer.getvalue()).decode()
            status, reply = call(conn, "POST", "/init", {"code": code, "entry": "main.main"})
            assert status == 200, reply
            payload = {"input": None, "execution_id": "e1", "deadline": time.time() + 30}
            status, reply = call(conn, "POST", "/run", payload)
        finally:
            conn.close()
    assert status == 200
    assert reply["result"] == {"root": "read-only", "interfaces": ["lo"], "remaining": True}
    assert reply["logs"] == "hello from 10001\nfrom a child\nfrom fd 2\n"
