"""Domain values: frozen records and the enums that describe their states."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Self

DEFAULT_PROJECT = "default"


def utcnow() -> datetime:
    return datetime.now(UTC)


class RuntimeStatus(enum.StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    ERROR = "error"


class FunctionStatus(enum.StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    ERROR = "error"


class ExecutionStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"  # the function's fault: exception, timeout, oom, crashed
    ERROR = "error"  # the platform's fault: lost, no_image, …
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    def can_become(self, other: ExecutionStatus) -> bool:
        return other in TRANSITIONS[self]


FINAL_STATUSES = frozenset(
    {
        ExecutionStatus.SUCCESS,
        ExecutionStatus.FAILED,
        ExecutionStatus.ERROR,
        ExecutionStatus.CANCELLED,
    }
)

#: The only allowed status changes of an execution.
TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    ExecutionStatus.QUEUED: frozenset(
        {ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED, ExecutionStatus.ERROR}
    ),
    ExecutionStatus.RUNNING: frozenset(FINAL_STATUSES),
    ExecutionStatus.SUCCESS: frozenset(),
    ExecutionStatus.FAILED: frozenset(),
    ExecutionStatus.ERROR: frozenset(),
    ExecutionStatus.CANCELLED: frozenset(),
}


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

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


@dataclass(frozen=True)
class Package:
    """A function's code: a zip archive stored once per content hash."""

    sha256: str
    md5sum: str
    size: int


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


@dataclass(frozen=True)
class Execution:
    id: str
    function_id: str
    function_name: str
    function_version: int = 0
    function_alias: str | None = None
    status: ExecutionStatus = ExecutionStatus.QUEUED
    status_reason: str | None = None
    sync: bool = True
    input: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float | None = None
    start_kind: str | None = None
    init_ms: float | None = None
    image_id: str | None = None
    source: ExecutionSource = ExecutionSource.API
    description: str | None = None
    node_id: str | None = None
    expired: bool = False
    request_hash: str | None = None
    attempts: int = 0
    cancel_requested: str | None = None  # graceful | kill
    project_id: str = DEFAULT_PROJECT
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
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
