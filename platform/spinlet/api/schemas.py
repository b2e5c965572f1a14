"""Request bodies: validated with pydantic, errors turned into `ValidationFailed`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from spinlet.domain import Role, WebhookMode
from spinlet.errors import ValidationFailed
from spinlet.services.runtimes import NAME_RE

Model = TypeVar("Model", bound=BaseModel)

# Rules the services check (with a message that names the rule), written into the OpenAPI
# document only: names of runtimes, functions and aliases, and strings that must not be blank
# (values are stripped first, so a blank one is empty).
NAME: dict[str, Any] = {"pattern": NAME_RE.pattern}
NOT_BLANK: dict[str, Any] = {"pattern": r"\S"}
#: The largest whole number a request may give where the store keeps one (version numbers,
#: counts): those are 32-bit integers, and PostgreSQL refuses more.
MAX_WHOLE = 2**31 - 1


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


#: A time as RFC 3339 (or ISO 8601) writes it; one without an offset is UTC.
AwareTime = Annotated[datetime, AfterValidator(_utc)]
#: A job's status as an update may set it (`done` is reached, never set).
JobStatusName = Literal["running", "paused", "cancelled"]


def json_in_string(value: Any) -> Any:
    """Qinling clients send an input as a string holding JSON: objects and arrays are parsed."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


class Body(BaseModel):
    # A field we do not know is refused, naming it: a misspelt `inptu` or `timout` ignored would
    # run with a default the caller did not ask for. What Qinling clients send is declared.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        """No NUL character (U+0000) in what is kept as text: PostgreSQL cannot keep one, so
        every store refuses it. An execution's input and result are JSON, where it may be."""
        if info.field_name != "input" and _holds_nul(value):
            raise ValueError("a NUL character (U+0000) is not allowed")
        return value


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    return False


def parse(model: type[Model], data: Any) -> Model:
    if not isinstance(data, dict):
        raise ValidationFailed("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        unknown = [_where(err) for err in errors if err["type"] == "extra_forbidden"]
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            raise ValidationFailed(
                f"unknown field{'s' if len(unknown) > 1 else ''} {names}; "
                f"the fields are: {', '.join(model.model_fields)}",
                unknown_fields=unknown,
            ) from None
        problems = "; ".join(f"{_where(err)}: {err['msg']}" for err in errors)
        raise ValidationFailed(f"invalid request: {problems}") from None


def _where(error: ErrorDetails) -> str:
    return ".".join(str(part) for part in error["loc"]) or "body"


class RuntimeCreate(Body):
    name: str = Field(min_length=1, max_length=255, json_schema_extra=NAME)
    image: str = Field(min_length=1, max_length=512, json_schema_extra=NOT_BLANK)
    description: str | None = Field(default=None, max_length=4096)
    # Sent by Qinling clients (true unless told otherwise); a runtime registered over the API is
    # its project's own and given no credentials, whatever they say: the record shows both.
    is_public: bool | None = None
    trusted: bool | None = None


class RuntimeUpdate(Body):
    name: str | None = Field(default=None, min_length=1, max_length=255, json_schema_extra=NAME)
    image: str | None = Field(
        default=None, min_length=1, max_length=512, json_schema_extra=NOT_BLANK
    )
    description: str | None = Field(default=None, max_length=4096)


class FunctionBody(Body):
    """Fields of a function create or update, from JSON, form or multipart bodies."""

    name: str | None = Field(default=None, min_length=1, max_length=255, json_schema_extra=NAME)
    runtime_id: str | None = Field(default=None, min_length=1, max_length=255)
    runtime: str | None = Field(default=None, min_length=1, max_length=255)
    entry: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)
    timeout: float | None = Field(default=None, gt=0)
    memory_size: int | None = Field(default=None, gt=0)
    cpu: int | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0, le=10)
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    # Replaces all of the function's variables when given; a JSON string in a form.
    environment: dict[str, str] | None = None
    # On update: variables to set and names to unset, the others kept (JSON strings in a form).
    environment_add: dict[str, str] | None = None
    environment_remove: list[str] | None = None
    # An isolated network for its containers (the outside world only); default: no network.
    network: bool | None = None
    # Its dependencies, as requirements.txt lines ("" for none); see the README.
    requirements: str | None = None
    code: dict[str, Any] | None = None
    # The Qinling client flattens `code` into the form on update (`swift` only to be refused
    # as an unsupported source).
    source: str | None = None
    md5sum: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")
    swift: Any = None

    @field_validator("code", "environment", "environment_add", "environment_remove", mode="before")
    @classmethod
    def _json_in_forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip() in ("", "null"):
                return None
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be JSON: {exc.msg}") from None
        return value

    def code_md5sum(self) -> str | None:
        code = self.code or {}
        source = code.get("source", self.source)
        if self.swift is not None and source is None:
            source = "swift"
        if source not in (None, "package"):
            raise ValidationFailed(
                f"code source {source!r} is not supported; upload a package (source 'package')"
            )
        md5 = code.get("md5sum") or self.md5sum
        if md5 is not None and not (isinstance(md5, str) and len(md5) == 32):
            raise ValidationFailed("md5sum must be 32 hexadecimal characters")
        return md5


class ExecutionCreate(Body):
    function_id: str | None = Field(default=None, min_length=1, max_length=255)
    function_alias: str | None = Field(default=None, min_length=1, max_length=255)
    function_version: int = Field(default=0, ge=0, le=MAX_WHOLE)
    input: Any = None
    sync: bool = True
    description: str | None = Field(default=None, max_length=4096)
    id: uuid.UUID | None = None
    source_execution_id: str | None = Field(default=None, min_length=1, max_length=64)
    # When to queue it (RFC 3339; a time without an offset is UTC); async only.
    schedule: AwareTime | None = None

    @field_validator("function_version", mode="before")
    @classmethod
    def _null_version(cls, value: Any) -> Any:
        return 0 if value is None else value

    @field_validator("sync", mode="before")
    @classmethod
    def _null_sync(cls, value: Any) -> Any:
        return True if value is None else value

    @field_validator("input", mode="before")
    @classmethod
    def _json_string(cls, value: Any) -> Any:
        return json_in_string(value)


class JobBody(Body):
    """Fields of a job create or update (Qinling's, plus `function_alias`, `timezone`); null
    means "not given". Times are RFC 3339 / ISO 8601 (without an offset: UTC)."""

    name: str | None = Field(default=None, max_length=255)
    function_id: str | None = Field(default=None, min_length=1, max_length=255)
    function_alias: str | None = Field(default=None, min_length=1, max_length=255)
    function_version: int | None = Field(default=None, ge=0, le=MAX_WHOLE)
    # Any JSON value; a string holding a JSON object or array is that value (Qinling's CLI).
    function_input: Any = None
    pattern: str | None = Field(default=None, min_length=1, max_length=255)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    first_execution_time: AwareTime | None = None
    next_execution_time: AwareTime | None = None
    count: int | None = Field(default=None, ge=1, le=MAX_WHOLE)
    status: JobStatusName | None = None

    @field_validator("function_input", mode="before")
    @classmethod
    def _json_string(cls, value: Any) -> Any:
        return json_in_string(value)


class ExecutionCancel(Body):
    kill: bool = False


class ScaleBody(Body):
    """How many provisioned containers to add or take away (Qinling's scale_up/scale_down)."""

    count: int = Field(default=1, ge=1, le=1000)


class VersionCreate(Body):
    description: str | None = Field(default=None, max_length=4096)


class RoutingBody(Body):
    """`{"version": N, "weight": 0.1}`; `{}` (on update) removes the canary."""

    version: int | None = Field(default=None, ge=0, le=MAX_WHOLE)
    weight: float | None = None


class AliasBody(Body):
    """Fields of an alias create or update (Qinling's, plus `routing`); null means "not given"."""

    name: str | None = Field(default=None, min_length=1, max_length=255, json_schema_extra=NAME)
    function_id: str | None = Field(default=None, min_length=1, max_length=255)
    # The Qinling CLI sends the version of an update as a string: "2" is read as 2.
    function_version: int | None = Field(default=None, ge=0, le=MAX_WHOLE)
    description: str | None = Field(default=None, max_length=4096)
    routing: RoutingBody | None = None


class WebhookBody(Body):
    """Fields of a webhook create or update (Qinling's, plus `mode`); null means "not given"."""

    function_id: str | None = Field(default=None, min_length=1, max_length=255)
    function_alias: str | None = Field(default=None, max_length=255)
    # The Qinling CLI may send the version of an update as a string: "2" is read as 2.
    function_version: int | None = Field(default=None, ge=0, le=MAX_WHOLE)
    description: str | None = Field(default=None, max_length=4096)
    mode: WebhookMode | None = Field(
        default=None,
        description="async (default): queued, 202 with the execution id; http: run at once "
        "with an HTTP event, the function's answer shaping the HTTP response",
    )


class TokenCreate(Body):
    """A new token of the caller's project (its secret is in the answer, once). Unknown fields
    are refused: a `project_id` ignored would make a token of another project than asked."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    role: Role = Role.MEMBER
    name: str | None = Field(default=None, max_length=255)
