"""A wheelhouse for the tests: the wheels they install, downloaded once per session.

Tests must not depend on a package index while they run: every test that installs or vendors a
wheel resolves against this local directory instead (`PIP_NO_INDEX=1`,
`PIP_FIND_LINKS=<wheelhouse>`, see `offline_pip`). The wheels are for the host's interpreter,
which is the runtime image's here (CPython 3.11, manylinux x86_64).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spinlet.layers.target import host_target

#: Two compiled wheels without dependencies and one small pure-Python wheel.
WHEELS = ("pyyaml", "orjson", "six")


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of the `WHEELS` for the host's Python, downloaded once per session from
    wherever pip's own configuration says."""
    from tests.conftest import unavailable

    directory = tmp_path_factory.mktemp("wheelhouse")
    command = [
        *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
        *("--only-binary=:all:", *host_target().pip_arguments()),
        *("--dest", str(directory), *WHEELS),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        unavailable(f"the test wheels could not be downloaded:\n{done.stderr[-2000:]}")
    return directory


def wheel(wheelhouse: Path, name: str) -> Path:
    """The wheel of project `name` (as `WHEELS` spells it) in the wheelhouse."""
    [found] = (path for path in wheelhouse.glob("*.whl") if path.name.lower().startswith(name))
    return found


@pytest.fixture
def offline_pip(wheelhouse: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip in this test (and what it starts) finds wheels in the wheelhouse only."""
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    return wheelhouse
