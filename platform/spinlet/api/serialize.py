"""The records the API answers (Qinling v1 field names): one model each, read from the domain
record, that both writes the JSON and describes it in the OpenAPI document (`api/openapi.py`).

Records may carry more fields than their schema lists (additive changes are fine); every field
listed is always there, but an execution's `result` in a listing without `include_output`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import AliasPath, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer
from pydantic.json_schema import WithJsonSchema

from spinlet.domain import (
    ApiToken,
    ExecutionSource,
    ExecutionStatus,
    FunctionStatus,
    JobStatus,
    Role,
    RuntimeStatus,
    StartKind,
    StatusReason,
    WebhookMode,
)

#: Times as `datetime.isoformat()` writes them (`+00:00`, as the API always answered; pydantic's
#: own writer says `Z`, which `fromisoformat` before Python 3.11 refuses). It costs about 1.5 µs
#: a time, measured; an execution's record is still written in 23-25 µs, as fast as the dict and
#: `json.dumps` it replaces (26 µs), and a page of 1,000 in 18 ms instead of 21.
Time = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
#: Why an execution ended as it did: a string, since a newer node may write a reason this one
#: does not know; the document names the known ones.
Reason = Annotated[
    str | None,
    Field(
        description="why it ended as it did; known reasons: "
        + ", ".join(f"{r.value} ({r.status.value})" for r in StatusReason)
        + ". A newer node may write others.",
        examples=[r.value for r in StatusReason],
    ),
]
#: A mapping shown by its sorted keys only (a function's environment: the values are secret).
Keys = Annotated[list[str], BeforeValidator(sorted)]


class Record(BaseModel):
    """Read from a domain record's attributes (`model_validate(record)`)."""

    # Fields with a default are still always written: required in the schema of an answer.
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )


class Code(Record):
    source: str
    md5sum: str


class RuntimeRecord(Record):
    id: str
    name: str
    image: str
    description: str | None
    status: RuntimeStatus = Field(
        description="what this node can do with it: available; not_built or building (a "
        "shipped runtime whose image this node has not built yet: built on first use, or by "
        "POST /v1/runtimes/{id}/build); error (its last build here failed: status_message)"
    )
    status_message: str | None = None
    is_public: bool
    trusted: bool
    project_id: str
    created_at: Time
    updated_at: Time | None


class FunctionRecord(Record):
    id: str
    name: str
    description: str | None
    runtime_id: str
    code: Code
    entry: str
    count: int = 0  # Qinling's count of running workers
    cpu: int
    retries: int
    concurrency: int
    environment_keys: Keys = Field(validation_alias="environment")
    network: bool
    memory_size: int
    timeout: float
    status: FunctionStatus
    # Why it is in `error`: its dependencies' build failed, in pip's words.
    status_message: str | None
    requirements: str | None
    # Its layer's exact pins ("name==version"); while it rebuilds, the last good layer's.
    dependencies: list[str]
    package_size: int = Field(validation_alias=AliasPath("package", "size"))
    latest_version: int
    project_id: str
    created_at: Time
    updated_at: Time | None


class VersionRecord(Record):
    id: str
    function_id: str
    version_number: int = Field(validation_alias="number")
    description: str | None
    count: int = 0
    code: Code
    entry: str
    runtime_id: str
    image_id: str
    package_size: int = Field(validation_alias=AliasPath("package", "size"))
    timeout: float
    memory_size: int
    cpu: int
    environment_keys: Keys = Field(validation_alias="environment")
    network: bool
    dependencies: list[str]  # the exact pins it runs ("name==version")
    config_hash: str
    project_id: str
    created_at: Time
    updated_at: Time | None


class RoutingRecord(Record):
    version: int
    weight: float


class AliasRecord(Record):
    id: str
    name: str
    function_id: str
    function_version: int
    routing: RoutingRecord | None
    description: str | None
    project_id: str
    created_at: Time
    updated_at: Time | None


class WebhookRecord(Record):
    id: str = Field(description="the secret of its URL: 128 random bits, as 32 hex digits")
    function_id: str
    function_alias: str | None
    function_version: int
    mode: WebhookMode
    description: str | None
    project_id: str
    webhook_url: str = Field(description="POST here, without a token, to run the function")
    created_at: Time
    updated_at: Time | None


class WebhookList(Record):
    webhooks: list[WebhookRecord]


class Invoked(Record):
    """A webhook call (async mode) as Qinling answers it: the queued execution's id."""

    execution_id: str


class ExecutionErrorRecord(Record):
    """How an execution failed (the traceback is empty unless its code raised)."""

    type: str
    message: str
    traceback: str = ""


def _result_optional(schema: dict[str, Any]) -> None:
    """An execution's schema: listings leave the result out unless asked."""
    schema["required"].remove("result")


class ExecutionRecord(Record):
    model_config = ConfigDict(json_schema_extra=_result_optional)

    id: str
    function_id: str
    function_name: str
    function_version: int
    function_alias: str | None
    status: ExecutionStatus
    status_reason: Reason
    sync: bool
    input: Any
    result: Any = None  # left out of listings without `include_output=true`
    error: ExecutionErrorRecord | None
    duration_ms: float | None
    start_kind: StartKind | None
    init_ms: float | None
    image_id: str | None
    container_id: str | None  # the container it ran in; null while queued, or if it never ran
    source: ExecutionSource
    webhook_id: str | None  # the webhook that made it (source `webhook`)
    description: str | None
    expired: bool
    attempts: int
    node_id: str | None  # the node that ran (or runs) it
    job_id: str | None  # the cron job that fired it
    schedule: Time | None = Field(validation_alias="scheduled_at")  # when it is queued
    project_id: str
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    updated_at: Time | None


class JobRecord(Record):
    """A cron job (Qinling's fields, plus its last execution, time zone and skipped ticks)."""

    id: str
    name: str | None
    function_id: str
    function_version: int
    function_alias: str | None
    function_input: Any
    pattern: str | None
    timezone: str
    first_execution_time: Time | None
    next_execution_time: Time | None  # the tick it fires next; null once done or cancelled
    count: int | None = Field(description="executions still to fire; null: no end")
    status: JobStatus
    skipped: int = Field(
        description="ticks skipped: its previous execution was still queued or running"
    )
    last_execution_id: str | None
    last_execution_status: ExecutionStatus | None
    project_id: str
    created_at: Time
    updated_at: Time | None


class TokenRecord(Record):
    """A token's record: never its secret, which only the answer to its creation holds."""

    id: str
    project_id: str
    role: Role
    name: str | None
    prefix: str
    created_at: Time
    revoked_at: Time | None


class NewToken(TokenRecord):
    token: str  # the secret, shown once


class RuntimeList(Record):
    runtimes: list[RuntimeRecord]


class FunctionList(Record):
    functions: list[FunctionRecord]


class VersionList(Record):
    function_versions: list[VersionRecord]


class AliasList(Record):
    function_aliases: list[AliasRecord]


class JobList(Record):
    jobs: list[JobRecord]


class TokenList(Record):
    tokens: list[TokenRecord]


class ExecutionPage(Record):
    executions: list[ExecutionRecord]
    next: str | None  # the next page's absolute URL, with the same filters


class WorkerRecord(Record):
    """A warm container of a function (Qinling's `worker_name`), on a node of the fleet."""

    worker_name: str
    function_id: str
    function_version: int
    node_id: str
    node: str = Field(validation_alias=AliasPath("node_id"))
    state: str  # starting | busy | idle
    provisioned: bool  # kept by scale_up whatever the keep-alive
    since: Time  # when it was started


class WorkerList(Record):
    workers: list[WorkerRecord]


class Scaled(Record):
    """The answer to scale_up, scale_down and detach (202: the fleet follows)."""

    function_id: str
    count: int  # provisioned containers asked for, fleet-wide
    workers: int  # provisioned containers held now
    message: str


class ErrorCore(BaseModel):
    """What every error body says: a stable machine code and a human message."""

    code: str
    message: str


class CheckRecord(BaseModel):
    """One runtime check of an image (`spinlet runtimes check` runs them all)."""

    name: str
    passed: bool
    reason: str


class ErrorDetail(ErrorCore):
    """What went wrong; some errors add fields (named here when they are known)."""

    model_config = ConfigDict(extra="allow")

    # The fields a body named that the route does not know (400 validation_error).
    unknown_fields: list[str] | None = None
    # Seconds to wait before trying again, as in the Retry-After header (429, 503).
    retry_after: int | None = None
    # The runtime checks of an image refused as a runtime (400 invalid_runtime).
    checks: list[CheckRecord] | None = None


class RunFailedError(ErrorCore):
    """The standard error's fields, then the execution's error's (none for a cancelled one)."""

    type: str | None
    traceback: str


class RunFailed(BaseModel):
    """`/invoke` of a run that did not succeed (502): an error body, and the execution's end."""

    error: RunFailedError
    faultstring: str
    status: ExecutionStatus
    status_reason: Reason


class Error(BaseModel):
    """Every 4xx and 5xx answer (`faultstring` keeps Qinling clients readable)."""

    error: ErrorDetail
    faultstring: str

    @classmethod
    def of(cls, code: str, message: str, **extra: Any) -> dict[str, Any]:
        """The body as JSON values: the fields an error adds are kept, the others left out."""
        detail = ErrorDetail.model_validate({**extra, "code": code, "message": message})
        body = cls(error=detail, faultstring=message)
        return body.model_dump(mode="json", exclude_unset=True)


class Service(Record):
    name: str
    version: str
    api: str


class Health(Record):
    status: str


class Capacity(Record):
    total: int
    available: int


class Pool(Record):
    name: str
    capacity: Capacity


class Purged(Record):
    deleted: int


class Pending(Record):
    message: str
    status: ExecutionStatus


class Result(Record):
    data: Any


def respond(
    record: BaseModel,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    exclude: Any = None,
) -> web.Response:
    """A JSON answer of this record (written by pydantic-core: no dict in between)."""
    return web.json_response(
        text=record.model_dump_json(exclude=exclude), status=status, headers=headers
    )


def token(t: ApiToken) -> dict[str, Any]:
    """A token's record as plain JSON values (the CLI prints it)."""
    return TokenRecord.model_validate(t).model_dump(mode="json")
