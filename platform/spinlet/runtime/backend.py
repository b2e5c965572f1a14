"""The runtime-backend protocol: the only way the control plane runs function code.

The executions service hands a backend a `FunctionSpec` (what to run, with which limits), a way
to load the code, and a `RunRequest` (one execution's input). The backend picks or starts a
container, initialises it for that function version if needed, runs the input, enforces the
deadline, and always answers with a `RunOutcome`: a function that raises, times out, runs out of
memory or crashes its container is an outcome, not an exception. Only a platform fault (no image:
`ImageMissing`; engine unreachable) raises `RuntimeBackendError`.

The function's output goes to the `LogSink` the caller gives as it arrives, so that whatever
it wrote before any end is kept; an execution cancelled by its caller (a user's cancel) raises
`CancelledError` as usual, carrying what is known of it (`attached_outcome`).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from spinlet.domain import ExecutionError, StartKind, StatusReason
from spinlet.layers.target import PythonTarget
from spinlet.logspool import LogSink

if TYPE_CHECKING:
    from spinlet.runtime.conformance import Report

__all__ = [
    "Capacity",
    "CodeLoader",
    "ContainerInfo",
    "FunctionSpec",
    "LayerLoader",
    "OutcomeStatus",
    "RunOutcome",
    "RunRequest",
    "RuntimeBackend",
    "StartKind",
    "attach_outcome",
    "attached_outcome",
]

#: Loads a function package (zip bytes); called only when a container must be initialised.
CodeLoader = Callable[[], Awaitable[bytes]]

#: Gives the host directory of the function's extracted dependency layer (`LayerCache.path`,
#: fetched when this node lacks it); called only when a container must be initialised for a
#: function with a `layer_id`.
LayerLoader = Callable[[], Awaitable[Path]]


class OutcomeStatus(enum.StrEnum):
    """How a run ended; each is the execution status of the same name."""

    SUCCESS = "success"
    FAILED = "failed"  # the function's fault
    ERROR = "error"  # the platform's fault
    CANCELLED = "cancelled"  # stopped by a user (never produced by a backend itself)


@dataclass(frozen=True)
class FunctionSpec:
    """Everything that decides which container may serve an execution."""

    function_id: str
    function_name: str
    version: int
    package_hash: str  # content hash of the code: a container serves exactly one code
    image: str  # image reference (tag or id) of the runtime
    entry: str = "main.main"
    memory_size: int = 128 * 1024 * 1024  # bytes
    cpu: int = 1000  # millicores
    timeout: float = 60.0  # seconds
    environment: dict[str, str] = field(default_factory=dict)
    network: bool = False  # an isolated network; without it, none at all
    project_id: str = "default"
    layer_id: str | None = None  # its dependency layer (`domain.Layer`), if it has one


@dataclass(frozen=True)
class RunRequest:
    execution_id: str
    input: Any


@dataclass(frozen=True)
class RunOutcome:
    status: OutcomeStatus
    status_reason: StatusReason | None = None
    result: Any = None
    error: ExecutionError | None = None
    logs: str = ""
    duration_ms: float = 0.0
    start_kind: StartKind = StartKind.COLD
    init_ms: float | None = None
    image_id: str | None = None
    # The container it ran in (the process's name for the process backend); None when it
    # never reached one.
    container_id: str | None = None


@dataclass(frozen=True)
class Capacity:
    """The most one container of this node can be given: what its engine (or machine) has."""

    cpu: int  # millicores
    memory_size: int  # bytes


@dataclass(frozen=True)
class ContainerInfo:
    """A container a backend holds, as shown by `GET /v1/runtimes/{id}/pool`."""

    id: str
    image: str  # the image reference it was made for
    function_id: str | None  # None for a stem cell (started, initialised for no function)
    version: int | None
    state: str  # starting | stem | busy | idle
    created_at: float
    last_used_at: float
    name: str = ""  # the container's (or process's) name
    project_id: str | None = None
    provisioned: bool = False  # kept whatever the keep-alive (`provision`)


class RuntimeBackend(Protocol):
    async def open(self) -> None:
        """Prepare for work; adopt or remove what an earlier run of this node left behind."""

    async def close(self) -> None:
        """Remove every container this backend started."""

    async def image_id(self, image: str) -> str | None:
        """The id of a locally present image, or None when it is missing."""

    async def image_labels(self, image: str) -> dict[str, str]:
        """The labels of a locally present image; `ImageMissing` when it is not here."""

    async def keep_image(self, image_id: str, keep: bool) -> None:
        """Keep the image present whatever becomes of its tags (published versions run on it),
        or stop keeping it (`keep=False`: it may then go once nothing else holds it)."""

    async def capacity(self) -> Capacity:
        """The largest `cpu` and `memory_size` a container of this node can have (asked of
        the engine once, then kept)."""

    async def python_target(self, image: str) -> PythonTarget:
        """The Python of the runtime image `image` as pip's wheel selection sees it (asked of
        the image itself once per image id, then kept); `ImageMissing` when it is not here."""

    async def check_runtime(self, image: str, checks: Sequence[str]) -> Report:
        """Run the conformance `checks` (`conformance.CHECKS`) against `image`, in a sandbox as
        functions get (outside the pool's books); `ImageMissing` when it is not here."""

    async def execute(
        self,
        spec: FunctionSpec,
        load_code: CodeLoader,
        request: RunRequest,
        load_layer: LayerLoader | None = None,
        log: LogSink | None = None,
    ) -> RunOutcome:
        """Run one execution to its end and describe how it ended. `load_layer` is required
        when `spec.layer_id` is set; the layer is then on the function's `sys.path` right after
        its code, and a runtime image that cannot take one is a `RuntimeBackendError`.

        The output of initialising and of running goes to `log` as it arrives, and the
        outcome's `logs` is `log.text()` (without `log`, the backend keeps its own). When the
        call is cancelled once it has a container (starting it, or running the code), the
        `CancelledError` carries an outcome with the logs, `duration_ms`, `start_kind`,
        `image_id` and `container_id` (`attached_outcome`)."""

    async def containers(self) -> list[ContainerInfo]:
        """The containers currently held by this backend."""

    async def provision(
        self,
        spec: FunctionSpec,
        count: int,
        load_code: CodeLoader,
        load_layer: LayerLoader | None = None,
    ) -> int:
        """Keep `count` containers initialised for `spec` whatever the keep-alive (provisioned
        concurrency); those provisioned for another version or code of the same function are
        released. Starts what fits now, never waiting for room, and releases any excess (an
        idle container at once, a busy one once its execution ends). Returns how many are
        provisioned for `spec` now; `RuntimeBackendError` when the code cannot be
        initialised."""

    def unprovision(self, function_id: str) -> None:
        """Release every container provisioned for the function (busy ones once they end)."""

    def prewarm(self, image: str, memory_size: int, cpu: int) -> None:
        """Keep stem cells of this image and limits ready from now on (returns at once)."""

    def stats(self) -> dict[str, int]:
        """Containers by state (`starting`, `stem`, `busy`, `idle`), `containers` (all) and
        `memory_bytes` (their memory limits summed): cheap, no engine call."""


_OUTCOME = "_spinlet_outcome"


def attach_outcome(cancelled: BaseException, outcome: RunOutcome) -> None:
    """Let a cancellation that ends a run carry what is known of it (the backend's side)."""
    setattr(cancelled, _OUTCOME, outcome)


def attached_outcome(cancelled: BaseException) -> RunOutcome | None:
    """What a cancelled `execute` knew of its run when it stopped (None: it had not started)."""
    outcome = getattr(cancelled, _OUTCOME, None)
    return outcome if isinstance(outcome, RunOutcome) else None
