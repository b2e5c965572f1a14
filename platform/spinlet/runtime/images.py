"""Building the runtime image (`runtimes/python/Dockerfile`), registry or not.

`ensure_runtime_image` returns the id of the runtime image, building it when it is missing: on
the base given, else `$SPINLET_RUNTIME_BASE`, else the official slim Python image. A base that is
not present locally is pulled; where no registry can be reached, the base is bootstrapped from
Debian packages (`deploy/bootstrap-base-image.sh`) instead. Every step is reported through
`progress`, one line at a time.

The Docker SDK is blocking: call this from the CLI, or through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
from docker import DockerClient

from spinlet.errors import RuntimeBackendError
from spinlet.paths import deploy_dir, runtimes_dir
from spinlet.runtime.protocol import PROTOCOL_VERSION

#: The runtime protocol the image must speak: the one this node speaks (checked at `/init`).
RUNTIME_PROTOCOL = PROTOCOL_VERSION
DEFAULT_BASE = "python:3.11-slim-bookworm"
BOOTSTRAP_BASE = "spinlet/base-python:bookworm"
DEFAULT_RUNTIME_IMAGE = "spinlet/runtime-python3:1"

#: The image label carrying the runtime protocol version.
PROTOCOL_LABEL = "spinlet.runtime.protocol"
#: The image label carrying a hash of the sources it was built from (to notice stale images).
SOURCE_LABEL = "spinlet.runtime.source"
#: Give up on pulling a base after this long (a pull without a registry normally fails fast).
PULL_TIMEOUT = 60.0

Progress = Callable[[str], None]


@contextlib.contextmanager
def _docker_errors(action: str) -> Iterator[None]:
    """Translate the Docker SDK's errors (and connection errors) into `RuntimeBackendError`."""
    try:
        yield
    except (docker.errors.DockerException, OSError) as exc:
        raise RuntimeBackendError(f"{action}: {exc}") from exc


def image_present(client: DockerClient, ref: str) -> bool:
    """Whether the image `ref` (name:tag or id) is present in the local engine."""
    with _docker_errors(f"cannot inspect image {ref}"):
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
    return True


def ensure_runtime_image(
    client: DockerClient,
    *,
    image: str = DEFAULT_RUNTIME_IMAGE,
    base: str | None = None,
    rebuild: bool = False,
    progress: Progress = print,
) -> str:
    """The id of the runtime image `image`, built first if it is missing (or `rebuild`)."""
    chosen = base or os.environ.get("SPINLET_RUNTIME_BASE") or DEFAULT_BASE
    if rebuild:
        progress(f"rebuilding runtime image {image} from {chosen}")
    elif not image_present(client, image):
        progress(f"runtime image {image} is missing: building it from {chosen}")
    elif _labels(client, image).get(SOURCE_LABEL) != source_hash():
        progress(f"runtime image {image} was built from other sources: rebuilding it")
    else:
        return _image_id(client, image)
    usable = provide_base(client, chosen, progress)
    return _build(client, image, usable, progress)


def bootstrap_base(tag: str, *, mirror: str | None = None, progress: Progress = print) -> None:
    """Make the base image `tag` from Debian packages, without a registry (needs root).

    Runs `deploy/bootstrap-base-image.sh`, reporting each line of its output.
    """
    script = deploy_dir() / "bootstrap-base-image.sh"
    command = ["bash", str(script), "--tag", tag]
    if mirror:
        command += ["--mirror", mirror]
    progress(f"bootstrapping base image {tag} from Debian packages (a minute or two)")
    started = time.monotonic()
    last_line = ""
    try:
        with subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                if line := raw.rstrip():
                    last_line = line
                    progress(line)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot run {script}: {exc}") from exc
    if proc.returncode != 0:
        raise RuntimeBackendError(
            f"bootstrapping base image {tag} failed (exit status {proc.returncode}): {last_line}"
        )
    progress(f"bootstrapped base image {tag} in {time.monotonic() - started:.0f} s")


def provide_base(client: DockerClient, base: str, progress: Progress = print) -> str:
    """A base image that is present locally: `base` itself, pulled, or the bootstrapped one."""
    if image_present(client, base):
        progress(f"base image {base} is present")
        return base
    if base != BOOTSTRAP_BASE:  # a local-only name: never pull it from a registry
        progress(f"base image {base} is not present: pulling {base}…")
        failure = _pull(client, base, PULL_TIMEOUT)
        if failure is None:
            progress(f"pulled {base}")
            return base
        progress(f"cannot pull {base} ({failure}): using the bootstrapped base {BOOTSTRAP_BASE}")
    if image_present(client, BOOTSTRAP_BASE):
        progress(f"base image {BOOTSTRAP_BASE} is present")
    else:
        bootstrap_base(BOOTSTRAP_BASE, progress=progress)
    return BOOTSTRAP_BASE


def _pull(client: DockerClient, ref: str, timeout: float) -> str | None:
    """Pull `ref`, giving up after `timeout` seconds; None on success, else why it failed.

    The pull runs in a daemon thread, so that a pull stuck in the engine cannot hang us.
    """
    repository, tag = docker.utils.parse_repository_tag(ref)
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            client.images.pull(repository, tag=tag or "latest")
            outcome.append(None)
        except Exception as exc:  # whatever it is, the pull failed
            reason = getattr(exc, "explanation", None) or str(exc)
            outcome.append(_one_line(reason) or type(exc).__name__)

    thread = threading.Thread(target=attempt, name=f"pull {ref}", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def _build(client: DockerClient, image: str, base: str, progress: Progress) -> str:
    """Build `runtimes/python` as `image` on `base`; return the new image's id."""
    context = runtimes_dir() / "python"
    if not (context / "Dockerfile").is_file():
        raise RuntimeBackendError(f"no runtime Dockerfile in {context}")
    progress(f"building {image} from {base}")
    started = time.monotonic()
    with _docker_errors(f"building runtime image {image} failed"):
        stream = client.api.build(
            path=str(context),
            tag=image,
            buildargs={"BASE": base},
            labels={SOURCE_LABEL: source_hash()},
            rm=True,
            decode=True,
            pull=False,
        )
        for item in stream:
            _report_build_item(item, image, progress)
        image_id = _image_id(client, image)
    progress(f"built {image} ({_short(image_id)}) in {time.monotonic() - started:.1f} s")
    return image_id


def _report_build_item(item: dict[str, Any], image: str, progress: Progress) -> None:
    if "error" in item:
        detail = item.get("errorDetail") or {}
        message = detail.get("message") or item["error"]
        raise RuntimeBackendError(f"building runtime image {image} failed: {_one_line(message)}")
    for line in str(item.get("stream") or "").splitlines():
        if line.strip():
            progress(line.rstrip())


def source_hash() -> str:
    """A hash over the runtime's build context: an image with another one is stale."""
    digest = hashlib.sha256()
    context = runtimes_dir() / "python"
    for path in sorted(
        p for p in context.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _labels(client: DockerClient, ref: str) -> dict[str, str]:
    with _docker_errors(f"cannot inspect image {ref}"):
        return dict(client.images.get(ref).labels or {})


def _image_id(client: DockerClient, ref: str) -> str:
    with _docker_errors(f"cannot inspect image {ref}"):
        return str(client.images.get(ref).id)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
