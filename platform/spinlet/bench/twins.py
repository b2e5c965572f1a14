"""The trivial function the bench deploys, once per runtime language: an echo, in Python or in
Node.js (its twin for runtimes built from `runtimes/nodejs`)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from spinlet.packages import PackageLimits, normalize
from spinlet.paths import project_root
from spinlet.runtime.catalog import ShippedRuntime

ECHO_PY = (project_root() / "functions" / "echo.py").read_bytes()
ECHO_JS = b"// Returns its input unchanged.\nmodule.exports.main = (event) => event;\n"


@dataclass(frozen=True)
class Echo:
    """An echo function as the API receives it and as a runtime's `/init` loads it."""

    package: bytes  # the upload
    filename: str
    entry: str
    code: bytes  # the zip given to `/init`
    naive: tuple[str, ...]  # the command `docker run` runs per call in the image

    @property
    def python(self) -> bool:
        return self.filename.endswith(".py")


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def echo_for(runtime: ShippedRuntime) -> Echo:
    """The echo in the language of `runtime`."""
    if runtime.context == "nodejs":
        package = _zip("echo.js", ECHO_JS)
        return Echo(
            package=package,
            filename="echo.zip",
            entry="echo.main",
            code=package,
            naive=("node", "-e", "console.log(JSON.stringify({x: 1}))"),
        )
    code, _ = normalize(ECHO_PY, "echo.py", PackageLimits())
    return Echo(
        package=ECHO_PY,
        filename="echo.py",
        entry="echo.main",
        code=code,
        naive=("python3", "-c", "import json; print(json.dumps({'x': 1}))"),
    )
