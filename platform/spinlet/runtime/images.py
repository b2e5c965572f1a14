"""Building the image of a shipped runtime (`catalog.ShippedRuntime`), registry or not.

`ensure_runtime_image` returns the id of a runtime's image, building it from its directory of
`runtimes/` when it is missing or was built from other sources: on the base given, else (for
the default runtime) `$SPINLET_RUNTIME_BASE`, else the runtime's public base image. A base that
is not present locally is pulled; where no registry can be reached, the runtime's offline base is
bootstrapped from Debian packages (`deploy/bootstrap-base-image.sh`) instead, or reused when it
is already here. Every step is reported through `progress`, one line at a time.

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
from spinlet.runtime.catalog import DEFAULT, OfflineBase, ShippedRuntime
from spinlet.runtime.driver import RUNTIME_LABEL
from spinlet.runtime.protocol import PROTOCOL_VERSION

#: The runtime protocol the image must speak: the one this node speaks (checked at `/init`).
RUNTIME_PROTOCOL = PROTOCOL_VERSION
DEFAULT_BASE = DEFAULT.public_base
BOOTSTRAP_BASE = DEFAULT.offline_base.tag
DEFAULT_RUNTIME_IMAGE = DEFAULT.image

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
    runtime: ShippedRuntime = DEFAULT,
    image: str | None = None,
    base: str | None = None,
    rebuild: bool = False,
    progress: Progress = print,
) -> str:
    """The id of the image of `runtime` (tagged `image`, default its own), built first when it
    is missing or was built from other sources (or when `rebuild`)."""
    image = image or runtime.image
    env_base = os.environ.get("SPINLET_RUNTIME_BASE") if runtime.name == DEFAULT.name else None
    chosen = base or env_base or runtime.public_base
    sources = source_hash(runtime.context)
    if rebuild:
        progress(f"rebuilding runtime image {image} from {chosen}")
    elif not image_present(client, image):
        progress(f"runtime image {image} is missing: building it from {chosen}")
    elif _labels(client, image).get(SOURCE_LABEL) != sources:
        progress(f"runtime image {image} was built from other sources: rebuilding it")
    else:
        return _image_id(client, image)
    usable = provide_base(client, chosen, progress, offline=runtime.offline_base)
    return _build(client, runtime, image, usable, progress)


def bootstrap_base(
    tag: str,
    *,
    offline: OfflineBase = DEFAULT.offline_base,
    mirror: str | None = None,
    progress: Progress = print,
) -> None:
    """Make the base image `tag` from the Debian packages `offline` names, without a registry
    (needs root).

    Runs `deploy/bootstrap-base-image.sh`, reporting each line of its output.
    """
    script = deploy_dir() / "bootstrap-base-image.sh"
    command = ["bash", str(script), "--tag", tag, "--suite", offline.suite]
    command += ["--include", ",".join(offline.packages)]
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


def provide_base(
    client: DockerClient,
    base: str,
    progress: Progress = print,
    *,
    offline: OfflineBase = DEFAULT.offline_base,
) -> str:
    """A base image that is present locally: `base` itself, pulled, or the offline one
    (`offline.tag`, reused when present, else bootstrapped)."""
    fallback = offline.tag
    if image_present(client, base):
        progress(f"base image {base} is present")
        return base
    if base != fallback:  # a local-only name: never pull it from a registry
        progress(f"base image {base} is not present: pulling {base}…")
        failure = _pull(client, base, PULL_TIMEOUT)
        if failure is None:
            progress(f"pulled {base}")
            return base
        progress(f"cannot pull {base} ({failure}): using the bootstrapped base {fallback}")
    if image_present(client, fallback):
        progress(f"base image {fallback} is present")
    else:
        bootstrap_base(fallback, offline=offline, progress=progress)
    return fallback


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


def _build(
    client: DockerClient, runtime: ShippedRuntime, image: str, base: str, progress: Progress
) -> str:
    """Build the runtime's directory of `runtimes/` as `image` on `base`; return its id."""
    context = runtimes_dir() / runtime.context
    if not (context / "Dockerfile").is_file():
        raise RuntimeBackendError(f"no runtime Dockerfile in {context}")
    progress(f"building {image} from {base}")
    started = time.monotonic()
    with _docker_errors(f"building runtime image {image} failed"):
        stream = client.api.build(
            path=str(context),
            tag=image,
            buildargs={"BASE": base},
            labels={SOURCE_LABEL: source_hash(runtime.context), RUNTIME_LABEL: runtime.name},
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


def source_hash(context_name: str = DEFAULT.context) -> str:
    """A hash over a runtime's build context (a directory of `runtimes/`): an image with
    another one is stale."""
    digest = hashlib.sha256()
    context = runtimes_dir() / context_name
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
