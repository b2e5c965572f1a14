"""Installing a function's requirements with pip, wheels only, for a runtime's Python.

pip runs as the node's own `python -m pip` in a scratch directory, with the node's environment
and configuration: where wheels come from (an index, an extra index, `--find-links` to a
wheelhouse for an air-gapped fleet) is pip's configuration on the node (`PIP_INDEX_URL`,
`PIP_FIND_LINKS`, `PIP_NO_INDEX`, `pip.conf`), never the tenant's, whose text has passed
`spinlet.requirements.parse`. `--only-binary=:all:` with the target's `--implementation`,
`--python-version`, `--abi` and `--platform` picks wheels the runtime can load whatever Python
the node runs, and means that no package's build code runs on the node.

What pip prints on a failure is what the function's user reads, so it is cut to its error lines
and stripped of credentials (an index URL with `user:password@`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from spinlet.errors import LayerBuildFailed
from spinlet.layers.target import PythonTarget
from spinlet.requirements import Requirements

MiB = 1024 * 1024
#: A file takes whole pages on disk and in the page cache: counted rounded up to one.
PAGE_SIZE = 4096
#: How much of pip's output a failure's message keeps (its end, where the errors are).
MESSAGE_LIMIT = 4000
#: `scheme://user:password@host` → `scheme://***@host`.
_CREDENTIALS_RE = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
#: What pip writes in its log (`--log`, at debug level whatever it prints) when it gets no page
#: from an index: refused, timed out, no route, DNS, TLS, proxy; a 4xx answer is an index that
#: was reached (a 404 is a project it does not have).
_NOT_FETCHED_RE = re.compile(r"Could not fetch URL (?!.*Client Error).*")
UNREACHABLE = "the package index could not be reached"
_NO_DISTRIBUTION = "No matching distribution found"
NO_WHEEL = (
    "Only wheels for the runtime ({target}) are installed: a version that does not exist, or "
    "that is published only as source (sdist), cannot be."
)


@dataclass(frozen=True)
class Installed:
    """A layer installed by pip: its directory, its exact pins and its size."""

    directory: Path
    dependencies: tuple[str, ...]  # "name==version", canonical names, sorted
    size: int  # bytes, each file in whole pages


def layer_id(target: PythonTarget, dependencies: Sequence[str]) -> str:
    """The content address of a layer: the same pins for the same target are one layer."""
    text = "\n".join([target.key, *sorted(dependencies)])
    return hashlib.sha256(text.encode()).hexdigest()


async def install(
    requirements: Requirements,
    target: PythonTarget,
    scratch: Path,
    *,
    timeout: float,  # noqa: ASYNC109 (pip is killed at the limit, not only left behind)
    max_size: int,
) -> Installed:
    """Install `requirements` for `target` into `<scratch>/site`, within `timeout` seconds and
    `max_size` bytes; `LayerBuildFailed` with pip's words when it cannot.

    When the node's Python is the target's version, the layer also gets `.pyc` files
    (unchecked-hash ones: the layer never changes), so a function's cold start does not compile
    its dependencies in a read-only directory where nothing can be cached.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    site, report, log = scratch / "site", scratch / "report.json", scratch / "pip.log"
    await asyncio.to_thread(_write, scratch / "requirements.txt", requirements.text + "\n")
    command = [
        *(sys.executable, "-m", "pip", "install", "--target", str(site)),
        "--only-binary=:all:",
        *target.pip_arguments(),
        *("--no-compile", "--no-input", "--disable-pip-version-check"),
        *("--progress-bar", "off", "--report", str(report), "--log", str(log)),
        *("-r", "requirements.txt"),
    ]
    returncode, output = await _run(command, scratch, deadline, timeout)
    if returncode != 0:
        not_fetched = await asyncio.to_thread(_not_fetched, log)
        raise LayerBuildFailed(failure_message(output, target, not_fetched))
    dependencies = await asyncio.to_thread(_pins, report)
    if _compiles_for(target):
        await _run(
            [
                *(sys.executable, "-m", "compileall", "-q", "-j", "0"),
                *("--invalidation-mode", "unchecked-hash", str(site)),
            ],
            scratch,
            deadline,
            timeout,
        )  # a module that does not compile (a test file for Python 2) is simply left alone
    size = await asyncio.to_thread(measure, site)
    if size > max_size:
        raise LayerBuildFailed(
            f"the installed dependencies take {size / MiB:.1f} MiB, more than the limit of "
            f"{max_size / MiB:.1f} MiB (SPINLET_MAX_LAYER_SIZE)"
        )
    return Installed(directory=site, dependencies=dependencies, size=size)


def failure_message(output: str, target: PythonTarget, not_fetched: str | None = None) -> str:
    """What a user reads when pip failed: its error lines (the end of what it printed),
    without credentials, with what it means when the index could not be reached or a project
    has no wheel for the runtime (`not_fetched`: the first index page pip could not get)."""
    output = redact(output)
    lines = output.strip().splitlines()
    first_error = next((i for i, line in enumerate(lines) if line.startswith("ERROR:")), None)
    errors = "\n".join(lines if first_error is None else lines[first_error:])
    if len(errors) > MESSAGE_LIMIT:
        errors = "…" + errors[-MESSAGE_LIMIT:].partition("\n")[2]
    if not_fetched is not None:
        return (
            f"{UNREACHABLE} (pip's own configuration on the node says where it is): "
            f"{redact(not_fetched)}\n{errors}"
        )
    if _NO_DISTRIBUTION in output:
        errors += f"\n{NO_WHEEL.format(target=target.key)}"
    return errors or "pip failed and printed nothing"


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by `***`."""
    return _CREDENTIALS_RE.sub(r"\g<scheme>***@", text)


def measure(directory: Path) -> int:
    """The bytes the files under `directory` take, each in whole pages (blocking)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            size = os.lstat(os.path.join(root, name)).st_size
            total += -(-size // PAGE_SIZE) * PAGE_SIZE
    return total


async def _run(command: list[str], cwd: Path, deadline: float, limit: float) -> tuple[int, str]:
    """Run `command` until `deadline` (loop time); its exit status and its output (stdout and
    stderr together). Past the deadline it is killed, with anything it started."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(max(remaining, 0)):
            output, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise LayerBuildFailed(
            f"installing the dependencies took longer than the time limit of {limit:g} s"
        ) from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")


def _not_fetched(log: Path) -> str | None:
    """The first index page pip's log says it could not get, if any."""
    try:
        with log.open(encoding="utf-8", errors="replace") as lines:
            return next((m.group() for line in lines if (m := _NOT_FETCHED_RE.search(line))), None)
    except FileNotFoundError:
        return None


def _pins(report: Path) -> tuple[str, ...]:
    """The `name==version` of every distribution pip's `--report` says it installed."""
    with report.open(encoding="utf-8") as file:
        installed = json.load(file)["install"]
    pins = {
        f"{canonicalize_name(item['metadata']['name'])}=={item['metadata']['version']}"
        for item in installed
    }
    return tuple(sorted(pins, key=lambda pin: pin.partition("==")[0]))


def _compiles_for(target: PythonTarget) -> bool:
    """Whether this node's Python writes `.pyc` files the target's interpreter reads."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return sys.implementation.name == "cpython" and (target.implementation, target.version) == (
        "cp",
        version,
    )


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
