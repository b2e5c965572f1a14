"""Dependency layers in sandboxes: a function's layer (wheels installed by the node) is linked
beside its code at `/init`, read-only, importable right after the code, compiled modules
included, and seen by that function only; stem cells made before the function serve it too."""

from __future__ import annotations

import asyncio
import platform
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from spinlet.errors import ImageMissing, RuntimeBackendError
from spinlet.layers.target import host_target
from spinlet.runtime.backend import FunctionSpec, OutcomeStatus, RunOutcome, RunRequest, StartKind
from spinlet.runtime.codedirs import LAYERS
from spinlet.runtime.pool import PoolBackend
from tests.helpers import eventually
from tests.integration.runtime.backends import PEEKS, YAML_C_LOADER, Target

WHICH_LAYER = """
    import which

    def main(event):
        return which.LAYER
"""


@pytest.fixture(scope="session")
def yaml_layer(yaml_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layer as the node builds one: PyYAML installed with `pip install --target`."""
    directory = tmp_path_factory.mktemp("layer") / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"),
            *("--target", str(directory), "--no-index", "--find-links", str(yaml_wheel.parent)),
            "pyyaml",
        ],
        check=True,
        timeout=120,
    )
    return directory


def cached(target: Target, layer: Path, layer_id: str | None = None) -> tuple[str, Path]:
    """Put a copy of `layer` where the node's layer cache keeps it (on the filesystem of the
    sandboxes' directories); return its id and directory."""
    layer_id = layer_id or uuid.uuid4().hex
    directory = target.socket_root / "code" / LAYERS / layer_id
    shutil.copytree(layer, directory)
    return layer_id, directory


def one_module_layer(target: Target, name: str, source: str) -> tuple[str, Path]:
    directory = target.socket_root / "scratch" / uuid.uuid4().hex
    directory.mkdir(parents=True)
    (directory / f"{name}.py").write_text(source)
    return cached(target, directory)


async def run(
    backend: PoolBackend, spec: FunctionSpec, package: bytes, layer: Path | None, data: Any = None
) -> RunOutcome:
    async def load_code() -> bytes:
        return package

    async def load_layer() -> Path:
        assert layer is not None
        return layer

    request = RunRequest(execution_id=str(uuid.uuid4()), input=data)
    return await backend.execute(spec, load_code, request, load_layer)


async def test_a_layer_provides_a_compiled_module(target: Target, yaml_layer: Path) -> None:
    layer_id, layer = cached(target, yaml_layer)
    spec, package = target.spec(YAML_C_LOADER, layer_id=layer_id)
    async with target.opened() as backend:
        outcome = await run(backend, spec, package, layer, "a: [1, 2]")
    assert outcome.status is OutcomeStatus.SUCCESS, outcome.error
    result = outcome.result
    assert (result["with_libyaml"], result["loader"], result["loaded"]) == (
        True,
        "yaml.cyaml",
        {"a": [1, 2]},
    )
    assert result["module"] == "_yaml.cpython-311-x86_64-linux-gnu.so"
    assert result["from"].endswith("/layer/yaml/__init__.py")  # not the node's own PyYAML
    if target.kind == "docker":
        assert result["from"] == "/var/spinlet/layer/yaml/__init__.py"


async def test_a_stem_cell_made_before_the_function_serves_it_with_its_layer(
    target: Target, yaml_layer: Path
) -> None:
    async with target.opened(stem_cells=1) as backend:
        backend.prewarm(target.image, 128 * 1024 * 1024, 1000)

        async def ready() -> bool:
            return backend.stats()["stem"] == 1 and backend.stats()["starting"] == 0

        await eventually(ready, within=30)
        # The function and its layer exist only now, after its stem cell was started.
        layer_id, layer = cached(target, yaml_layer)
        spec, package = target.spec(YAML_C_LOADER, layer_id=layer_id)
        outcome = await run(backend, spec, package, layer, "b: 3")
        assert (outcome.status, outcome.start_kind) == (OutcomeStatus.SUCCESS, StartKind.STEM)
        assert (outcome.result["with_libyaml"], outcome.result["loaded"]) == (True, {"b": 3})
        again = await run(backend, spec, package, layer, "c: 4")
        assert (again.start_kind, again.result["loaded"]) == (StartKind.WARM, {"c": 4})


async def test_a_sandbox_serves_only_the_layer_it_was_initialised_with(target: Target) -> None:
    """A function whose layer changed (its requirements were rebuilt) gets a new sandbox."""
    first_id, first = one_module_layer(target, "which", "LAYER = 'first'\n")
    second_id, second = one_module_layer(target, "which", "LAYER = 'second'\n")
    spec, package = target.spec(WHICH_LAYER, layer_id=first_id)
    async with target.opened() as backend:
        before = await run(backend, spec, package, first)
        after = await run(backend, replace(spec, layer_id=second_id), package, second)
        again = await run(backend, spec, package, first)
    assert (before.result, before.start_kind) == ("first", StartKind.COLD)
    assert (after.result, after.start_kind) == ("second", StartKind.COLD)
    assert (again.result, again.start_kind) == ("first", StartKind.WARM)


async def test_a_layer_is_loaded_only_to_initialise_a_sandbox(target: Target) -> None:
    layer_id, layer = one_module_layer(target, "which", "LAYER = 'only'\n")
    spec, package = target.spec(WHICH_LAYER, layer_id=layer_id)
    loads = 0

    async def load_layer() -> Path:
        nonlocal loads
        loads += 1
        return layer

    async def load_code() -> bytes:
        return package

    async with target.opened() as backend:
        for _ in range(3):
            request = RunRequest(execution_id=str(uuid.uuid4()), input=None)
            outcome = await backend.execute(spec, load_code, request, load_layer)
            assert outcome.result == "only"
    assert loads == 1


@pytest.mark.docker
async def test_a_function_sees_only_its_own_layer_and_it_is_read_only(
    docker_target: Target, yaml_layer: Path
) -> None:
    secret = f"secret_{uuid.uuid4().hex[:8]}"
    other_id, other_layer = one_module_layer(docker_target, secret, "TOKEN = 1\n")
    other_spec, other_package = docker_target.spec(f"import {secret}\nmain = print\n")
    other_spec = replace(other_spec, layer_id=other_id)
    layer_id, layer = cached(docker_target, yaml_layer)
    spec, package = docker_target.spec(PEEKS, layer_id=layer_id)
    async with docker_target.opened() as backend:
        # The other function's sandbox stays, idle, with its layer linked in its directory.
        other = await run(backend, other_spec, other_package, other_layer, "hello")
        assert other.status is OutcomeStatus.SUCCESS, other.error
        [other_dir] = docker_target.code_dirs()
        on_host = docker_target.socket_root / "code"
        paths = [
            str(on_host / other_dir / "layer"),
            str(other_layer),
            f"/var/spinlet/../spinlet/../{other_dir}/layer",
        ]
        peek = {"secret": f"{secret}.py", "paths": paths, "mine": "/var/spinlet/layer"}
        peek["file"] = "yaml/__init__.py"
        outcome = await run(backend, spec, package, layer, peek)
    assert outcome.status is OutcomeStatus.SUCCESS, outcome.error
    result = outcome.result
    assert (result["mount"], result["found"]) == (["code", "layer"], [])
    assert result["others"] == ["ENOENT", "ENOENT", "ENOENT"]
    # The node's files (0644, not the runtime user's) on a read-only mount.
    assert {name: result[name] for name in ("append", "create", "mkdir", "chmod", "remove")} == {
        "append": "EACCES",
        "create": "EROFS",
        "mkdir": "EROFS",
        "chmod": "EROFS",
        "remove": "EROFS",
    }


@pytest.mark.docker
async def test_the_python_target_of_the_runtime_image_is_probed_once(
    docker_target: Target,
) -> None:
    """The runtime image runs CPython 3.11 on Debian bookworm (glibc 2.36)."""
    client = docker_target.docker_client
    async with docker_target.opened() as backend:
        since = int(time.time()) - 1
        first = await backend.python_target(docker_target.image)
        second = await backend.python_target(docker_target.image)
        until = int(time.time()) + 1
        with pytest.raises(ImageMissing):
            await backend.python_target(f"spinlet/absent-{uuid.uuid4().hex[:8]}:1")
    machine = platform.machine()
    assert (first.implementation, first.version, first.abi) == ("cp", "3.11", "cp311")
    assert first.platforms[0] == f"manylinux_2_36_{machine}"
    assert f"manylinux2014_{machine}" in first.platforms
    assert second == first
    events = await asyncio.to_thread(
        lambda: list(
            client.events(
                since=since,
                until=until,
                decode=True,
                filters={
                    "type": "container",
                    "event": "create",
                    "label": f"spinlet.node={docker_target.node_id}",
                },
            )
        )
    )
    assert len(events) == 1  # the second answer was the first one's, kept


async def test_the_process_driver_runs_the_nodes_python(socket_root: Path) -> None:
    target = Target("process", f"test-{uuid.uuid4().hex[:8]}", socket_root, "any:1")
    async with target.opened() as backend:
        assert await backend.python_target("any:1") == host_target()


async def test_a_function_with_a_layer_needs_a_way_to_load_it(target: Target) -> None:
    spec, package = target.spec(WHICH_LAYER, layer_id="b" * 64)

    async def load_code() -> bytes:
        return package

    async with target.opened() as backend:
        request = RunRequest(execution_id=str(uuid.uuid4()), input=None)
        with pytest.raises(RuntimeBackendError, match=f"layer {'b' * 64} but no way"):
            await backend.execute(spec, load_code, request)
        assert backend.stats()["containers"] == 0  # refused before a sandbox was made
