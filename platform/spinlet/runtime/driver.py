"""What a pool needs from the thing that makes sandboxes: create, destroy, inspect, clean up.

A sandbox runs the runtime server (`runtimes/python/server.py`) listening on a Unix socket the
control plane can reach. `DockerDriver` makes hardened containers; `ProcessDriver` makes plain
local processes (tests, development without Docker). The pool (`PoolBackend`) does the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from spinlet.errors import RuntimeBackendError
from spinlet.layers.target import PythonTarget
from spinlet.runtime.backend import Capacity, FunctionSpec

#: Why a sandbox stopped answering: killed for memory, or any other exit.
ExitReason = Literal["oom", "crashed"]

#: Told (on the event loop) that a sandbox of this node stopped: `(sandbox id, reason)`.
ExitListener = Callable[[str, ExitReason], None]

#: The in-container path of the socket directory, and the socket in it.
SOCKET_DIR = "/run/spinlet"
SOCKET_NAME = "rt.sock"

#: The image label naming the runtime an image carries (`python3`, `nodejs20`): the language
#: its functions are written in.
RUNTIME_LABEL = "spinlet.runtime"

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class SandboxShape:
    """What is fixed when a sandbox is created, and so the key of stem cells: a started sandbox
    of a shape can be initialised for any function of that shape."""

    image_id: str  # the resolved image id (a rebuilt tag is another shape)
    memory_size: int  # bytes
    cpu: int  # millicores
    network: bool = False  # on an isolated network (see DockerDriver), else none at all

    @classmethod
    def of(cls, spec: FunctionSpec, image_id: str) -> SandboxShape:
        return cls(
            image_id=image_id, memory_size=spec.memory_size, cpu=spec.cpu, network=spec.network
        )

    def label(self) -> str:
        """A short stable hash of the shape (a container label)."""
        material = json.dumps([self.image_id, self.memory_size, self.cpu, self.network])
        return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FilledDirs:
    """A sandbox's code and dependency layer directories, as the sandbox sees them."""

    code: str
    layer: str | None = None  # None when the function has no layer


@dataclass(frozen=True)
class Ending:
    """How a sandbox's process ended: its exit status (None when it is gone and its status with
    it) and the last lines it wrote, when it was created with `keep_output` ("" otherwise)."""

    status: int | None
    output: str = ""


@dataclass(frozen=True)
class Sandbox:
    """A created and started sandbox, as the pool sees it."""

    id: str  # container id, or the process's name for the process driver
    name: str
    socket_path: Path  # where the control plane connects
    image_id: str  # what it runs (the Docker image id, or a fixed name)


class Driver(Protocol):
    """Creates and destroys the sandboxes of one node."""

    #: Short name ("docker", "process") for messages.
    name: str

    async def image_id(self, image: str) -> str | None:
        """The id of a locally present image, or None when it is missing."""

    async def image_labels(self, image: str) -> dict[str, str]:
        """The labels of a locally present image; `ImageMissing` when it is not here."""

    async def create(
        self, shape: SandboxShape, spec: FunctionSpec | None = None, *, keep_output: bool = False
    ) -> Sandbox:
        """Create and start a sandbox of `shape`, labelled for `spec` (a cold start) or for no
        function (a stem cell); raise `RuntimeBackendError` on failure. With `keep_output`
        (a runtime check, never a function: what a function writes is the runtime's to
        capture), what its process writes is kept for `ending`."""

    async def fill_code(
        self, sandbox: Sandbox, package: bytes, layer: Path | None = None
    ) -> FilledDirs:
        """Put the zip `package`'s files in the sandbox's own code directory (`codedirs.py`),
        and those of the extracted dependency `layer` (a host directory) beside it; return both
        directories as the sandbox sees them. Raises `InvalidPackage` for a zip that cannot be
        extracted, `RuntimeBackendError` when the host cannot store it."""

    async def python_target(self, image: str) -> PythonTarget:
        """See `RuntimeBackend.python_target`."""

    async def seal(self, sandbox: Sandbox) -> None:
        """The sandbox's runtime listens: close its socket directory to the code it will run
        (no file can be made there any more, so none can fill the host's disk)."""

    async def destroy(self, sandbox: Sandbox) -> None:
        """Kill and remove a sandbox; a sandbox already gone is not an error."""

    async def inspect_exit(self, sandbox: Sandbox) -> ExitReason | None:
        """Why the sandbox has stopped, or None while it still runs."""

    async def ending(self, sandbox: Sandbox, lines: int) -> Ending | None:
        """How the sandbox's process ended, with at most its last `lines` lines of output; None
        while it still runs."""

    async def watch(self, listener: ExitListener) -> None:
        """From now until `close()`, call `listener` on the event loop whenever a sandbox of this
        node stops, whoever stopped it (best effort: the pool still notices failed calls)."""

    async def keep_image(self, image_id: str, keep: bool) -> None:
        """See `RuntimeBackend.keep_image`."""

    async def capacity(self) -> Capacity:
        """See `RuntimeBackend.capacity`."""

    async def list_leftovers(self) -> list[str]:
        """Sandboxes of this node that this driver does not hold (an earlier run's)."""

    async def remove_leftovers(self) -> int:
        """Remove every sandbox of this node that this driver does not hold; return how many."""

    async def close(self) -> None:
        """Release the driver's own resources (threads, clients)."""


#: What decides whether a sandbox may serve an execution: all of it is fixed at /init.
PoolKey = tuple[str, int, str, str, int, int, bool, str, tuple[tuple[str, str], ...], str | None]


def pool_key(spec: FunctionSpec) -> PoolKey:
    return (
        spec.function_id,
        spec.version,
        spec.package_hash,
        spec.image,
        spec.memory_size,
        spec.cpu,
        spec.network,
        spec.entry,
        tuple(sorted(spec.environment.items())),
        spec.layer_id,  # a draft whose layer was rebuilt gets sandboxes with the new one
    )


def pool_key_hash(spec: FunctionSpec) -> str:
    """A short stable hash of what decides container reuse (used as a label)."""
    return hashlib.sha256(json.dumps(pool_key(spec)).encode()).hexdigest()[:16]


def name_prefix(node_id: str) -> str:
    """Sandbox names are `<prefix><8 hex>`; Docker names allow only `[a-zA-Z0-9_.-]`."""
    return "spinlet-" + re.sub(r"[^a-zA-Z0-9_.-]", "_", node_id) + "-"


def name_pattern(node_id: str) -> re.Pattern[str]:
    """Matches exactly the sandbox names of `node_id` (not those of `<node_id>-other`)."""
    return re.compile(re.escape(name_prefix(node_id)) + r"[0-9a-f]{8}")


def check_socket_path(path: Path) -> None:
    """Unix socket paths are short; fail early with a clear message instead of ENAMETOOLONG."""
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise RuntimeBackendError(
            f"runtime socket path {str(path)!r} is longer than {MAX_SOCKET_PATH} bytes; "
            "use a shorter work directory"
        )
