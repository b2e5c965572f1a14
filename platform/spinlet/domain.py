"""Domain values: frozen records and the enums that describe their states."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, Self, TypeVar

from spinlet.errors import IllegalTransition

DEFAULT_PROJECT = "default"


def utcnow() -> datetime:
    return datetime.now(UTC)


_E = TypeVar("_E", bound=enum.StrEnum)


def _known(kind: type[_E], stored: str) -> _E | None:
    """The member of `kind` stored as `stored`; None when this release does not know it."""
    try:
        return kind(stored)
    except ValueError:
        return None


class _Readable(enum.StrEnum):
    """A status of a record that a newer node of the fleet may write in a value this node does
    not know: read as `unknown`, a member never written (the store keeps the stored value)."""

    @classmethod
    def read(cls, stored: str) -> Self:
        """The status of a stored row; `unknown` for one this node does not know."""
        return _known(cls, stored) or cls("unknown")


class RuntimeStatus(_Readable):
    CREATING = "creating"
    AVAILABLE = "available"
    ERROR = "error"
    NOT_BUILT = "not_built"  # a built-in runtime whose image this node has not built yet
    BUILDING = "building"  # a built-in runtime whose image this node is building now
    UNKNOWN = "unknown"  # a newer node's status (never written)


class FunctionStatus(_Readable):
    BUILDING = "building"  # its dependency layer is being resolved
    AVAILABLE = "available"
    ERROR = "error"
    UNKNOWN = "unknown"  # a newer node's status (never written)


class JobStatus(_Readable):
    RUNNING = "running"  # fires at `next_execution_time`
    PAUSED = "paused"  # keeps its ticks, fires none until resumed
    DONE = "done"  # fired its `count` executions
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # a newer node's status (never written)


class StartKind(enum.StrEnum):
    """How the container that served an execution was obtained."""

    WARM = "warm"  # already initialised for this function version
    STEM = "stem"  # started in advance, initialised for this execution
    COLD = "cold"  # created and started for this execution

    @classmethod
    def read(cls, stored: str | None) -> StartKind | None:
        """The start kind of a stored row; None for none, or for one this node does not know."""
        return _known(cls, stored) if stored else None


class ExecutionStatus(_Readable):
    """An execution's status; execution groups speak the same statuses.

    `UNKNOWN` is never written: it stands for a status this node does not know, written by a
    newer node of the fleet (see `ExecutionStatus.read`). Nothing moves to or from it here.
    """

    SCHEDULED = "scheduled"  # waits for its `schedule` time, then is queued
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"  # the function's fault: exception, timeout, oom, crashed
    ERROR = "error"  # the platform's fault: lost, no_image, …
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        ExecutionStatus.SUCCESS,
        ExecutionStatus.FAILED,
        ExecutionStatus.ERROR,
        ExecutionStatus.CANCELLED,
    }
)

#: The statuses of an execution that has not started yet: it may still be cancelled at once.
NOT_STARTED = (ExecutionStatus.SCHEDULED, ExecutionStatus.QUEUED)

#: The only allowed status changes of an execution; the store writes no other (`transition`).
TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    ExecutionStatus.SCHEDULED: frozenset(
        {ExecutionStatus.QUEUED, ExecutionStatus.CANCELLED, ExecutionStatus.ERROR}
    ),
    ExecutionStatus.QUEUED: frozenset(
        {ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED, ExecutionStatus.ERROR}
    ),
    # Back to `queued`: its node died and the function allows another attempt.
    ExecutionStatus.RUNNING: FINAL_STATUSES | {ExecutionStatus.QUEUED},
    ExecutionStatus.SUCCESS: frozenset(),
    ExecutionStatus.FAILED: frozenset(),
    ExecutionStatus.ERROR: frozenset(),
    ExecutionStatus.CANCELLED: frozenset(),
    ExecutionStatus.UNKNOWN: frozenset(),
}


#: The only allowed status changes of a function, and of the build of its dependency layer (a
#: build speaks the same statuses); the store writes no other (`transition`). Requirements that
#: change may land on a build that has already ended, so a function may skip `building`.
FUNCTION_TRANSITIONS: dict[FunctionStatus, frozenset[FunctionStatus]] = {
    # Its layer is stored (or its requirements were dropped), or resolving failed.
    FunctionStatus.BUILDING: frozenset({FunctionStatus.AVAILABLE, FunctionStatus.ERROR}),
    # New requirements or a rebuild; new requirements whose build already failed.
    FunctionStatus.AVAILABLE: frozenset({FunctionStatus.BUILDING, FunctionStatus.ERROR}),
    # A retry or a rebuild; requirements dropped, or changed to a set already built.
    FunctionStatus.ERROR: frozenset({FunctionStatus.BUILDING, FunctionStatus.AVAILABLE}),
    FunctionStatus.UNKNOWN: frozenset(),
}

#: The only allowed status changes of a cron job: paused and resumed by its owner, `done` once
#: it fired its `count`, `cancelled` for good.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: frozenset({JobStatus.PAUSED, JobStatus.DONE, JobStatus.CANCELLED}),
    JobStatus.PAUSED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.DONE: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.UNKNOWN: frozenset(),
}

_S = TypeVar("_S", ExecutionStatus, FunctionStatus, JobStatus)

#: Each status kind's table, with what a refusal calls the record.
_TABLES: dict[type[enum.StrEnum], tuple[str, dict[Any, frozenset[Any]]]] = {
    ExecutionStatus: ("an execution", TRANSITIONS),
    FunctionStatus: ("a function", FUNCTION_TRANSITIONS),
    JobStatus: ("a job", JOB_TRANSITIONS),
}


@dataclass(frozen=True)
class Transition(Generic[_S]):
    """A status change the table allows: from any of `sources` (as the row still is) to
    `target`. The store turns it into its conditional update (`WHERE status IN sources`)."""

    sources: tuple[_S, ...]
    target: _S

    @property
    def source_values(self) -> list[str]:
        return [status.value for status in self.sources]


def transition(sources: _S | Iterable[_S], target: _S) -> Transition[_S]:
    """The change from `sources` to `target`; `IllegalTransition` unless the table of their
    kind (`TRANSITIONS`, `FUNCTION_TRANSITIONS`) allows it from every one of them."""
    among: tuple[_S, ...] = (sources,) if isinstance(sources, enum.Enum) else tuple(sources)
    record, table = _TABLES[type(target)]
    illegal = [status.value for status in among if target not in table[status]]
    if illegal or not among:
        raise IllegalTransition(
            f"{record} cannot go from {'|'.join(illegal) or 'nothing'} to {target.value}"
        )
    return Transition(among, target)


class StatusReason(enum.StrEnum):
    """Why an execution ended as it did; each reason belongs to one final status."""

    # failed: the function's fault
    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    OOM = "oom"
    CRASHED = "crashed"
    RESULT_TOO_LARGE = "result_too_large"
    # error: the platform's fault
    LOST = "lost"  # its node died or stopped while it ran
    NO_IMAGE = "no_image"
    PROTOCOL_MISMATCH = "protocol_mismatch"  # its runtime speaks another protocol version
    NO_PACKAGE = "no_package"
    DEPENDENCIES = "dependencies"  # its dependency layer failed to build, or took too long
    NOT_FOUND = "not_found"  # what it runs was deleted
    BACKEND = "backend"
    INTERNAL = "internal"
    # cancelled
    CANCELLED = "cancelled"

    @property
    def status(self) -> ExecutionStatus:
        return _REASON_STATUS.get(self, ExecutionStatus.ERROR)

    @classmethod
    def read(cls, stored: str | None) -> StatusReason | str | None:
        """The reason of a stored row: a newer node's unknown reason stays as written."""
        return None if stored is None else _known(cls, stored) or stored


_REASON_STATUS = {
    StatusReason.EXCEPTION: ExecutionStatus.FAILED,
    StatusReason.TIMEOUT: ExecutionStatus.FAILED,
    StatusReason.OOM: ExecutionStatus.FAILED,
    StatusReason.CRASHED: ExecutionStatus.FAILED,
    StatusReason.RESULT_TOO_LARGE: ExecutionStatus.FAILED,
    StatusReason.CANCELLED: ExecutionStatus.CANCELLED,
}

#: The `type` of the error the platform describes for each reason (a function's exception
#: carries its own type).
_ERROR_TYPES = {
    StatusReason.TIMEOUT: "Timeout",
    StatusReason.OOM: "OutOfMemory",
    StatusReason.CRASHED: "ContainerCrashed",
    StatusReason.RESULT_TOO_LARGE: "ResultTooLarge",
    StatusReason.LOST: "Lost",
    StatusReason.NO_IMAGE: "RuntimeBackendError",
    StatusReason.PROTOCOL_MISMATCH: "RuntimeProtocolMismatch",
    StatusReason.NO_PACKAGE: "InvalidPackage",
    StatusReason.DEPENDENCIES: "LayerBuildFailed",
    StatusReason.NOT_FOUND: "NotFound",
    StatusReason.BACKEND: "RuntimeBackendError",
    StatusReason.INTERNAL: "InternalError",
}


@dataclass(frozen=True)
class ExecutionError:
    """How an execution failed, as its record's `error` shows it:
    `{"type", "message", "traceback"}` (the traceback is empty unless its code raised)."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def of(cls, reason: StatusReason, message: str) -> ExecutionError:
        """The error the platform reports for an execution it ended for `reason`."""
        return cls(_ERROR_TYPES.get(reason, "Error"), message)

    @classmethod
    def parse(cls, raw: Any) -> ExecutionError:
        """An error as a runtime or a stored record gives it, normalised to strings."""
        if not isinstance(raw, dict):
            raw = {"message": "no error details" if raw is None else str(raw)}
        return cls(
            type=str(raw.get("type") or "Error"),
            message=str(raw.get("message") or ""),
            traceback=str(raw.get("traceback") or ""),
        )

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


class ExecutionSource(enum.StrEnum):
    API = "api"
    INVOKE = "invoke"
    WEBHOOK = "webhook"
    JOB = "job"


@dataclass(frozen=True)
class Runtime:
    id: str
    name: str
    image: str
    description: str | None = None
    status: RuntimeStatus = RuntimeStatus.AVAILABLE
    is_public: bool = True
    trusted: bool = True
    project_id: str = DEFAULT_PROJECT
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime | None = None
    #: Why it is `error` (a built-in runtime's failed build on this node); never stored.
    status_message: str | None = None

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


@dataclass(frozen=True)
class Package:
    """A function's code: a zip archive stored once per content hash."""

    sha256: str
    md5sum: str
    size: int


@dataclass(frozen=True)
class Layer:
    """A dependency layer: the wheels of one resolved set installed for one Python target,
    stored once (in chunks of a tar archive) under its content address `id`, a sha256 over the
    target's key and the sorted pins."""

    id: str
    target: str  # `PythonTarget.key`: "cp311-cp311-manylinux_2_36_x86_64"
    dependencies: tuple[str, ...]  # "name==version" of every wheel, sorted by name
    size: int  # installed, in bytes
    archive_sha256: str  # of the stored archive, checked by every node that fetches it
    archive_size: int
    chunks: int
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class LayerBuild:
    """Resolving one requirements text for one runtime, shared by every function that asks for
    the same (`key`, a sha256 over the runtime id and the normalised requirements). One node at a
    time holds it (`owner`, until `lease_until`); another takes it over when the lease lapses."""

    key: str
    runtime_id: str
    requirements: str  # normalised: one requirement a line
    status: FunctionStatus = FunctionStatus.BUILDING
    message: str | None = None  # why it failed (pip's words), or None
    layer_id: str | None = None  # once available
    owner: str | None = None  # the node building it
    lease_until: datetime | None = None
    attempts: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime | None = None

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


@dataclass(frozen=True)
class Function:
    id: str
    name: str
    runtime_id: str
    package: Package
    entry: str = "main.main"
    description: str | None = None
    timeout: float = 60.0
    memory_size: int = 128 * 1024 * 1024
    cpu: int = 1000
    retries: int = 0  # extra attempts for a lost async execution
    concurrency: int = 10  # executions of it running at once on a node
    environment: dict[str, str] = field(default_factory=dict)  # for its code; never shown
    network: bool = False  # its containers get an isolated network; else none at all
    status: FunctionStatus = FunctionStatus.AVAILABLE
    latest_version: int = 0  # the highest version number ever published (numbers are not reused)
    requirements: str | None = None  # normalised requirements text; None: no dependencies
    build_key: str | None = None  # its `LayerBuild` (None without requirements)
    layer_id: str | None = None  # its `Layer`, once built (the last good one while rebuilding)
    status_message: str | None = None  # why it is in `error` (the build's message)
    dependencies: tuple[str, ...] = ()  # the pins of `layer_id` (read with the function)
    project_id: str = DEFAULT_PROJECT
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime | None = None

    @property
    def code(self) -> dict[str, str]:
        return {"source": "package", "md5sum": self.package.md5sum}

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


@dataclass(frozen=True)
class FunctionVersion:
    """An immutable snapshot of a function's code and configuration, numbered from 1.

    Version 0 is not stored: it always means the function's current code.
    """

    id: str
    function_id: str
    number: int
    package: Package
    entry: str
    runtime_id: str
    image_id: str  # the runtime image's id at publish time: a rebuilt image does not change it
    timeout: float
    memory_size: int
    cpu: int
    config_hash: str  # one hash over code and configuration (see `services.versions`)
    environment: dict[str, str] = field(default_factory=dict)
    network: bool = False
    description: str | None = None
    layer_id: str | None = None  # the dependency layer it pins (None: no dependencies)
    dependencies: tuple[str, ...] = ()  # that layer's "name==version" pins
    project_id: str = DEFAULT_PROJECT
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime | None = None

    @property
    def code(self) -> dict[str, str]:
        return {"source": "package", "md5sum": self.package.md5sum}


@dataclass(frozen=True)
class Routing:
    """An alias's canary: `weight` (strictly between 0 and 1) of executions run `version`."""

    version: int
    weight: float


@dataclass(frozen=True)
class Alias:
    """A name (unique per project) for a function at a version, optionally with a canary."""

    id: str
    name: str
    function_id: str
    function_version: int = 0
    routing: Routing | None = None
    description: str | None = None
    project_id: str = DEFAULT_PROJECT
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime | None = None

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


class WebhookMode(enum.StrEnum):
    """How a webhook runs its function: queued (`202` with the execution id, as Qinling) or
    at once, with an HTTP event, its answer shaping the HTTP response."""

    ASYNC = "async"
    HTTP = "http"


@dataclass(frozen=True)
class Webhook:
    """A URL that runs a function without a token: its id is the secret (128 random bits)."""

    id: str
    function_id: str
    function_alias: str | None = None  # through this alias (it picks the version)
    function_version: int = 0
    mode: WebhookMode = WebhookMode.ASYNC
    description: str | None = None
    project_id: str = DEFAULT_PROJECT
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime | None = None

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


@dataclass(frozen=True)
class Execution:
    id: str
    function_id: str
    function_name: str
    function_version: int = 0
    function_alias: str | None = None
    status: ExecutionStatus = ExecutionStatus.QUEUED
    status_reason: StatusReason | str | None = None  # a str: a newer node's reason
    sync: bool = True
    input: Any = None
    result: Any = None
    error: ExecutionError | None = None
    duration_ms: float | None = None
    start_kind: StartKind | None = None
    init_ms: float | None = None
    image_id: str | None = None
    container_id: str | None = None  # the container it ran in (None: it reached none)
    source: ExecutionSource = ExecutionSource.API
    webhook_id: str | None = None  # the webhook that made it (source `webhook`)
    description: str | None = None
    node_id: str | None = None
    expired: bool = False
    request_hash: str | None = None
    attempts: int = 0
    cancel_requested: str | None = None  # graceful | kill
    job_id: str | None = None  # the cron job that fired it
    scheduled_at: datetime | None = None  # when it is (or was) to be queued (`schedule`)
    project_id: str = DEFAULT_PROJECT
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


@dataclass(frozen=True)
class Job:
    """A cron job (Qinling's): fires an async execution of a function at each tick of
    `pattern` (in `timezone`), from `first_execution_time`, `count` times (None: forever).

    `next_execution_time` is the tick it fires next (None once it is done). A tick that comes
    while the job's previous execution has not finished is skipped, and counted (`skipped`).
    """

    id: str
    function_id: str
    function_version: int = 0
    function_alias: str | None = None
    name: str | None = None
    function_input: Any = None
    pattern: str | None = None  # cron: 5 fields, or 6 with seconds last (croniter's)
    timezone: str = "UTC"
    first_execution_time: datetime | None = None
    next_execution_time: datetime | None = None
    count: int | None = None  # executions still to fire; None: no end
    status: JobStatus = JobStatus.RUNNING
    skipped: int = 0
    last_execution_id: str | None = None
    last_execution_status: ExecutionStatus | None = None  # read with the job
    project_id: str = DEFAULT_PROJECT
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime | None = None

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


class Role(enum.StrEnum):
    """What a token may do: members work inside their project; admins also manage runtimes and
    the project's tokens, and see every project's listings (`all_projects=true`)."""

    ADMIN = "admin"
    MEMBER = "member"


@dataclass(frozen=True)
class ApiToken:
    """An API token's record; its secret is shown once, when it is made, and stored hashed."""

    id: str
    project_id: str
    role: Role
    prefix: str
    name: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a project, with a role (and the token, when there is one)."""

    project_id: str
    role: Role
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN
