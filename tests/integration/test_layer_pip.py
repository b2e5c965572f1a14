"""Installing requirements with the node's pip: wheels from the session's wheelhouse only, pins,
compiled modules that load, and the messages a user reads when it fails."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from spinlet.errors import LayerBuildFailed
from spinlet.layers.pip import UNREACHABLE, install, layer_id, redact
from spinlet.layers.target import PythonTarget, host_target
from spinlet.requirements import parse

MiB = 1024 * 1024
TARGET = host_target()

USES_COMPILED_WHEELS = """
    import orjson, yaml
    assert yaml.__with_libyaml__
    loaded = yaml.load("a: [1, 2]", Loader=yaml.CLoader)
    print(orjson.dumps(loaded).decode(), yaml.CLoader.__module__, orjson.__file__)
"""


async def installed(scratch: Path, text: str, **limits: float) -> object:
    return await install(
        parse(text),
        TARGET,
        scratch,
        timeout=limits.get("timeout", 120),
        max_size=int(limits.get("max_size", 500 * MiB)),
    )


async def failure(scratch: Path, text: str, **limits: float) -> str:
    with pytest.raises(LayerBuildFailed) as failed:
        await installed(scratch, text, **limits)
    return failed.value.message


async def test_compiled_wheels_install_and_load(offline_pip: Path, tmp_path: Path) -> None:
    layer = await install(
        parse("PyYAML>=6\norjson"), TARGET, tmp_path, timeout=120, max_size=500 * MiB
    )

    assert layer.directory == tmp_path / "site"
    names = [pin.partition("==")[0] for pin in layer.dependencies]
    assert names == ["orjson", "pyyaml"]
    assert all(pin.partition("==")[2][:1].isdigit() for pin in layer.dependencies)
    assert layer.size > MiB
    assert layer_id(TARGET, layer.dependencies) == layer_id(TARGET, layer.dependencies[::-1])
    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", textwrap.dedent(USES_COMPILED_WHEELS)],
        env={**os.environ, "PYTHONPATH": str(layer.directory), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split()[:2] == ['{"a":[1,2]}', "yaml.cyaml"]
    assert ran.stdout.split()[2].startswith(str(layer.directory))
    # Compiled ahead for the runtime's Python (the node's here), as unchecked-hash pycs (flags
    # 0b01): a cold import in the read-only layer reads them and never looks at the sources.
    tag = sys.implementation.cache_tag
    pycs = list(layer.directory.glob(f"yaml/__pycache__/*.{tag}.pyc"))
    assert len(pycs) == len(list(layer.directory.glob("yaml/*.py")))
    assert {int.from_bytes(pyc.read_bytes()[4:8], "little") for pyc in pycs} == {0b01}


async def test_a_layer_s_id_is_its_pins_and_its_target() -> None:
    pins = ("orjson==3.10.0", "pyyaml==6.0.2")
    other = PythonTarget("cp", "3.13", "cp313", TARGET.platforms)
    assert len({layer_id(TARGET, pins), layer_id(TARGET, pins[:1]), layer_id(other, pins)}) == 3


async def test_an_unknown_package_fails_with_pip_s_words(offline_pip: Path, tmp_path: Path) -> None:
    message = await failure(tmp_path, "pyyaml\nno-such-package-spinlet==1.0")
    assert "No matching distribution found for no-such-package-spinlet==1.0" in message
    assert TARGET.key in message


async def test_an_unknown_version_fails_with_pip_s_words(offline_pip: Path, tmp_path: Path) -> None:
    message = await failure(tmp_path, "pyyaml==0.0.1")
    assert "No matching distribution found for pyyaml==0.0.1" in message


def sdist(directory: Path, marker: Path) -> Path:
    """A source distribution whose build code, if it ever ran, would write `marker`."""
    directory.mkdir()
    setup = f"open({str(marker)!r}, 'w').close()\nfrom setuptools import setup\nsetup()\n"
    with tarfile.open(directory / "onlysource-1.0.tar.gz", "w:gz") as tar:
        for name, text in [
            ("onlysource-1.0/setup.py", setup),
            ("onlysource-1.0/PKG-INFO", "Metadata-Version: 2.1\nName: onlysource\nVersion: 1.0\n"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    return directory


async def test_a_project_with_only_a_source_distribution_is_refused(
    offline_pip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "build-code-ran"
    sources = sdist(tmp_path / "sources", marker)
    monkeypatch.setenv("PIP_FIND_LINKS", f"{offline_pip} {sources}")
    (tmp_path / "scratch").mkdir()

    message = await failure(tmp_path / "scratch", "onlysource")

    assert "No matching distribution found for onlysource" in message
    assert "source (sdist)" in message
    assert not marker.exists()


async def test_an_index_that_cannot_be_reached_says_so_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://builder:s3cr3t-pw@127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")

    message = await failure(tmp_path, "pyyaml")

    assert message.startswith(UNREACHABLE)
    assert "s3cr3t-pw" not in message
    assert "builder" not in message


async def test_a_build_past_its_time_limit_is_stopped_naming_it(
    offline_pip: Path, tmp_path: Path
) -> None:
    message = await failure(tmp_path, "pyyaml", timeout=0.05)
    assert message == "installing the dependencies took longer than the time limit of 0.05 s"


async def test_a_layer_over_the_size_limit_fails_naming_it(
    offline_pip: Path, tmp_path: Path
) -> None:
    message = await failure(tmp_path, "pyyaml\norjson", max_size=MiB)
    assert "more than the limit of 1.0 MiB (SPINLET_MAX_LAYER_SIZE)" in message


async def test_hashes_are_checked(offline_pip: Path, tmp_path: Path) -> None:
    message = await failure(tmp_path, f"six --hash=sha256:{'0' * 64}")
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in message


def test_credentials_in_any_url_are_removed() -> None:
    said = "Looking in https://u:pw@h.example/simple and http://token@10.0.0.1:8080/x, ok@mail"
    assert (
        redact(said)
        == "Looking in https://***@h.example/simple and http://***@10.0.0.1:8080/x, ok@mail"
    )
