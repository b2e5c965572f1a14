"""Code directories: a sandbox's code is extracted by the node, on the host, into a directory of
its own (read-only in a container): compiled modules load, a package does not count against the
function's memory, and a function sees only its own code."""

from __future__ import annotations

import io
import textwrap
import uuid
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from spinlet.runtime.backend import FunctionSpec, OutcomeStatus, StartKind
from tests.helpers import eventually, make_package, package_hash
from tests.integration.runtime.backends import COUNTER, PEEKS, YAML_C_LOADER, Target, execute

MiB = 1024 * 1024

READS_ZEROS = """
    import os

    MiB = 1024 * 1024

    def main(event):
        path = os.path.join(os.path.dirname(__file__), "zeros.bin")
        with open(path, "rb") as data:
            data.seek(event)
            chunk = data.read(MiB)
        return {"size": os.path.getsize(path), "read": len(chunk), "zeros": chunk.count(0)}
"""


def vendored(source: str, wheel: Path) -> bytes:
    """A function package with `main.py` and the wheel's files beside it (`pip --target`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for part in (wheel.read_bytes(), make_package(source)):
            with zipfile.ZipFile(io.BytesIO(part)) as files:
                for info in files.infolist():
                    archive.writestr(info, files.read(info))
    return buffer.getvalue()


def with_package(spec: FunctionSpec, package: bytes) -> tuple[FunctionSpec, bytes]:
    return replace(spec, package_hash=package_hash(package)), package


async def test_a_vendored_compiled_module_loads(target: Target, yaml_wheel: Path) -> None:
    spec, _ = target.spec(YAML_C_LOADER)
    package = vendored(YAML_C_LOADER, yaml_wheel)
    async with target.opened() as backend:
        outcome = await execute(backend, *with_package(spec, package), "a: [1, 2]")
    assert outcome.status is OutcomeStatus.SUCCESS, outcome.error
    assert outcome.result.pop("from").endswith("/code/yaml/__init__.py")  # from the package
    assert outcome.result == {
        "with_libyaml": True,
        "loader": "yaml.cyaml",
        "module": "_yaml.cpython-311-x86_64-linux-gnu.so",
        "loaded": {"a": [1, 2]},
    }


async def test_a_stem_cell_serves_a_function_from_its_code_directory(
    target: Target, yaml_wheel: Path
) -> None:
    """Stem cells are made before their function is known: their directory is filled later."""
    spec, _ = target.spec(YAML_C_LOADER)
    spec, package = with_package(spec, vendored(YAML_C_LOADER, yaml_wheel))
    async with target.opened(stem_cells=1) as backend:
        backend.prewarm(target.image, spec.memory_size, spec.cpu)

        async def ready() -> bool:
            return backend.stats()["stem"] == 1 and backend.stats()["starting"] == 0

        await eventually(ready, within=30)
        outcome = await execute(backend, spec, package, "b: 3")
        assert (outcome.status, outcome.start_kind) == (OutcomeStatus.SUCCESS, StartKind.STEM)
        assert outcome.result["loaded"] == {"b": 3}
        again = await execute(backend, spec, package, "c: 4")
        assert (again.start_kind, again.result["loaded"]) == (StartKind.WARM, {"c": 4})


@pytest.mark.docker
async def test_a_200_mib_package_runs_with_128_mib_of_memory(docker_target: Target) -> None:
    """The code is on the node's disk, not in the container's memory-counted /tmp."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.py", textwrap.dedent(READS_ZEROS))
        archive.writestr("zeros.bin", bytes(200 * MiB))
    spec, _ = docker_target.spec(READS_ZEROS, memory_size=128 * MiB)
    async with docker_target.opened() as backend:
        outcome = await execute(backend, *with_package(spec, buffer.getvalue()), 199 * MiB)
    assert outcome.status is OutcomeStatus.SUCCESS, (outcome.status_reason, outcome.error)
    assert outcome.result == {"size": 200 * MiB, "read": MiB, "zeros": MiB}


@pytest.mark.docker
async def test_a_function_cannot_write_its_code_nor_see_anothers(docker_target: Target) -> None:
    secret = f"secret_{uuid.uuid4().hex[:8]}.py"
    other_spec, _ = docker_target.spec(COUNTER)
    other = with_package(other_spec, make_package(COUNTER, extra={secret: "TOKEN = 1\n"}))
    peeker = docker_target.spec(PEEKS)
    async with docker_target.opened() as backend:
        assert (await execute(backend, *other)).result == 1  # its container stays, idle
        [other_dir] = docker_target.code_dirs()
        host_paths = [str(docker_target.socket_root / "code" / other_dir / "code")]
        paths = [*host_paths, f"/var/spinlet/../spinlet/../{other_dir}"]
        outcome = await execute(backend, *peeker, {"secret": secret, "paths": paths})
    assert outcome.status is OutcomeStatus.SUCCESS, outcome.error
    result = outcome.result
    assert (result["mount"], result["code"], result["found"]) == (
        ["code"],
        "/var/spinlet/code",
        [],
    )
    # The files are the node's (0644), and the mount is read-only for whatever the modes allow.
    assert (result["append"], result["create"], result["chmod"]) == ("EACCES", "EROFS", "EROFS")
    assert result["others"] == ["ENOENT", "ENOENT"]
