"""The OpenAPI document of the v1 API, served at `/v1/openapi.json`.

Written as a table of operations, one per route; a test checks it against the router, so a
route cannot be added without being described, and tests/integration/test_fuzz.py checks the
server's answers against it. Request bodies come from the pydantic models the handlers validate
with; the records answered are described field by field (more fields may come), errors exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from spinlet import __version__
from spinlet.api import schemas
from spinlet.api.filters import MAX_PAGE
from spinlet.domain import ExecutionSource, ExecutionStatus, FunctionStatus, Role, RuntimeStatus
from spinlet.store.queries import FILTER_FIELDS, OPS, SORT_FIELDS

#: The media types of a response, each with its schema (`{}`: any JSON).
Content = dict[str, Any]

STRING: dict[str, Any] = {"type": "string"}
TEXT: dict[str, Any] = {"type": ["string", "null"]}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
MAYBE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
ANY: dict[str, Any] = {}


def record(optional: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """An object with these fields, all of them always there but the `optional` ones."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
    }


def enum(values: type[Any]) -> dict[str, Any]:
    return {"type": "string", "enum": [member.value for member in values]}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def as_json(schema: dict[str, Any]) -> Content:
    return {"application/json": {"schema": schema}}


CODE = record(source=STRING, md5sum=STRING)
RUNTIME = record(
    id=STRING,
    name=STRING,
    image=STRING,
    description=TEXT,
    status=enum(RuntimeStatus),
    is_public=BOOLEAN,
    trusted=BOOLEAN,
    project_id=STRING,
    created_at=TIME,
    updated_at=MAYBE_TIME,
)
FUNCTION = record(
    id=STRING,
    name=STRING,
    description=TEXT,
    runtime_id=STRING,
    code=CODE,
    entry=STRING,
    count=INTEGER,
    cpu=INTEGER,
    retries=INTEGER,
    concurrency=INTEGER,
    environment_keys=array(STRING),
    network=BOOLEAN,
    memory_size=INTEGER,
    timeout=NUMBER,
    status=enum(FunctionStatus),
    package_size=INTEGER,
    latest_version=INTEGER,
    project_id=STRING,
    created_at=TIME,
    updated_at=MAYBE_TIME,
)
VERSION = record(
    id=STRING,
    function_id=STRING,
    version_number=INTEGER,
    description=TEXT,
    count=INTEGER,
    code=CODE,
    entry=STRING,
    runtime_id=STRING,
    image_id=STRING,
    package_size=INTEGER,
    timeout=NUMBER,
    memory_size=INTEGER,
    cpu=INTEGER,
    environment_keys=array(STRING),
    network=BOOLEAN,
    config_hash=STRING,
    project_id=STRING,
    created_at=TIME,
    updated_at=MAYBE_TIME,
)
ALIAS = record(
    id=STRING,
    name=STRING,
    function_id=STRING,
    function_version=INTEGER,
    routing={"anyOf": [{"type": "null"}, record(version=INTEGER, weight=NUMBER)]},
    description=TEXT,
    project_id=STRING,
    created_at=TIME,
    updated_at=MAYBE_TIME,
)
TOKEN = record(
    id=STRING,
    project_id=STRING,
    role=enum(Role),
    name=TEXT,
    prefix=STRING,
    created_at=TIME,
    revoked_at=MAYBE_TIME,
)
NEW_TOKEN = record(**TOKEN["properties"], token=STRING)  # the secret, shown once
EXECUTION = record(
    ("result",),  # not in listings without `include_output=true`
    id=STRING,
    function_id=STRING,
    function_name=STRING,
    function_version=INTEGER,
    function_alias=TEXT,
    status=enum(ExecutionStatus),
    status_reason=TEXT,
    sync=BOOLEAN,
    input=ANY,
    result=ANY,
    error={"type": ["object", "null"]},
    duration_ms={"type": ["number", "null"]},
    start_kind=TEXT,
    init_ms={"type": ["number", "null"]},
    image_id=TEXT,
    source=enum(ExecutionSource),
    description=TEXT,
    expired=BOOLEAN,
    attempts=INTEGER,
    node_id=TEXT,
    project_id=STRING,
    created_at=TIME,
    started_at=MAYBE_TIME,
    finished_at=MAYBE_TIME,
    updated_at=MAYBE_TIME,
)
#: `/invoke` of a run that did not succeed (502): an error body, and the execution's error.
RUN_FAILED = record(
    error={"type": "object", "required": ["code", "message"]},
    faultstring=STRING,
    status=enum(ExecutionStatus),
    status_reason=TEXT,
)
SERVICE = record(name=STRING, version=STRING, api=STRING)
ZIP: Content = {"application/zip": {"schema": {"type": "string", "format": "binary"}}}
TEXT_PLAIN: Content = {"text/plain": {"schema": STRING}}

ERROR = {
    "type": "object",
    "required": ["error", "faultstring"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "faultstring": {"type": "string"},
    },
}

FUNCTION_FORM = {
    "type": "object",
    "properties": {
        "package": {"type": "string", "format": "binary", "description": "a .py file or a .zip"},
        **{
            name: {"type": "string"}
            for name in (
                "name",
                "runtime_id",
                "entry",
                "code",
                "description",
                "timeout",
                "memory_size",
                "cpu",
                "concurrency",
                "retries",
                "environment",
                "network",
            )
        },
    },
}

ALL_PROJECTS = ("all_projects", "true for every project's (admins only: 403 otherwise)", BOOLEAN)
FILTER_HELP = f"a value, or op:value with op one of {' '.join(OPS)}"
#: Query parameters of the execution list: filters, then paging and sorting.
LIST_PARAMS = [
    *((name, FILTER_HELP, STRING) for name in FILTER_FIELDS),
    (
        "limit",
        f"page size (1 to {MAX_PAGE}, default 100)",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    ),
    ("marker", "the id of the previous page's last execution", STRING),
    ("sort_keys", f"comma-separated: {' '.join(SORT_FIELDS)}", STRING),
    ("sort_dirs", "comma-separated asc or desc, one per sort key", STRING),
    ("include_output", "true to include results", BOOLEAN),
    ("include_completed", "false for queued and running ones only", BOOLEAN),
    ALL_PROJECTS,
]
DOWNLOAD = (("download", "true for the package itself", BOOLEAN),)
WHOLE: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": schemas.MAX_WHOLE}
VERSION_NUMBER = WHOLE
#: Path parameters that are not strings.
PATH_TYPES = {"number": VERSION_NUMBER}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    ok: int = 200  # the success status
    answer: Content | None = None  # the success body's media types (None: no body)
    body: type[BaseModel] | dict[str, Any] | None = None  # a model, or a multipart schema
    body_required: bool = True
    query: tuple[tuple[str, str, dict[str, Any]], ...] = ()  # name, description, schema
    errors: tuple[int, ...] = (400, 404)
    public: bool = False  # answered without a token (it describes the server, no project)
    # other statuses it answers: their description and body
    extra: dict[int, tuple[str, Content | None]] = field(default_factory=dict)


OPERATIONS = (
    Operation(
        "get", "/", "Service name and version", answer=as_json(SERVICE), errors=(), public=True
    ),
    Operation(
        "get", "/v1", "Service name and version", answer=as_json(SERVICE), errors=(), public=True
    ),
    Operation(
        "get",
        "/health",
        "Liveness",
        answer=as_json(record(status=STRING)),
        errors=(),
        public=True,
    ),
    Operation(
        "get",
        "/ready",
        "Readiness: the database and the container engine answer, the runtime image is there",
        answer=as_json(record(status=STRING)),
        errors=(503,),
        public=True,
    ),
    Operation(
        "get", "/metrics", "Prometheus metrics (text; admins)", answer=TEXT_PLAIN, errors=(403,)
    ),
    Operation(
        "get",
        "/v1/openapi.json",
        "This document",
        answer=as_json({"type": "object"}),
        errors=(),
        public=True,
    ),
    Operation(
        "get",
        "/v1/runtimes",
        "List runtimes",
        answer=as_json(record(runtimes=array(RUNTIME))),
        errors=(),
    ),
    Operation(
        "post",
        "/v1/runtimes",
        "Register a runtime image (admins)",
        201,
        as_json(RUNTIME),
        schemas.RuntimeCreate,
        errors=(400, 403, 409),
    ),
    Operation("get", "/v1/runtimes/{id}", "A runtime, by id or name", answer=as_json(RUNTIME)),
    Operation(
        "put",
        "/v1/runtimes/{id}",
        "Change a runtime (admins)",
        answer=as_json(RUNTIME),
        body=schemas.RuntimeUpdate,
        errors=(400, 403, 404, 409),
    ),
    Operation(
        "delete", "/v1/runtimes/{id}", "Delete an unused runtime (admins)", 204, errors=(403, 404)
    ),
    Operation(
        "get",
        "/v1/runtimes/{id}/pool",
        "The runtime's containers",
        answer=as_json(record(name=STRING, capacity=record(total=INTEGER, available=INTEGER))),
    ),
    Operation(
        "get",
        "/v1/functions",
        "List functions",
        answer=as_json(record(functions=array(FUNCTION))),
        query=(ALL_PROJECTS,),
        errors=(400, 403),
    ),
    Operation(
        "post",
        "/v1/functions",
        "Upload a function (multipart, JSON with a base64 package, or a form)",
        201,
        as_json(FUNCTION),
        FUNCTION_FORM,
        errors=(400, 404, 409, 413),
    ),
    Operation(
        "get",
        "/v1/functions/{id}",
        "A function, by id or name (`?download=true`: its package)",
        answer={**as_json(FUNCTION), **ZIP},
        query=DOWNLOAD,
    ),
    Operation(
        "put",
        "/v1/functions/{id}",
        "Change a function (null fields stay as they are)",
        answer=as_json(FUNCTION),
        body=FUNCTION_FORM,
        body_required=False,
        errors=(400, 404, 409, 413),
    ),
    Operation("delete", "/v1/functions/{id}", "Delete a function", 204, errors=(403, 404)),
    Operation(
        "post",
        "/v1/functions/{id}/invoke",
        "Run a function: the body is its input, the result the answer",
        answer=as_json(ANY),
        query=(
            ("version", "a version number (0: the current code)", VERSION_NUMBER),
            ("alias", "run through this alias", STRING),
            ("async", "true to queue it (202)", BOOLEAN),
        ),
        errors=(400, 404, 413, 429),
        extra={
            202: ("queued", as_json(EXECUTION)),
            502: (
                "the execution failed: `error.code` is `execution_<status>`, `error.message` and "
                "`faultstring` its message, `error.type` and `error.traceback` its error's",
                as_json(RUN_FAILED),
            ),
        },
    ),
    Operation(
        "get",
        "/v1/functions/{id}/versions",
        "List a function's versions",
        answer=as_json(record(function_versions=array(VERSION))),
    ),
    Operation(
        "post",
        "/v1/functions/{id}/versions",
        "Publish the current code as a version (200: unchanged, the latest)",
        201,
        as_json(VERSION),
        schemas.VersionCreate,
        body_required=False,
        errors=(400, 404, 409),
        extra={200: ("nothing changed: the latest version", as_json(VERSION))},
    ),
    Operation(
        "get",
        "/v1/functions/{id}/versions/{number}",
        "A version (`?download=true`: its package)",
        answer={**as_json(VERSION), **ZIP},
        query=DOWNLOAD,
    ),
    Operation(
        "delete",
        "/v1/functions/{id}/versions/{number}",
        "Delete a version no alias uses",
        204,
        errors=(400, 403, 404),
    ),
    Operation(
        "get",
        "/v1/aliases",
        "List aliases",
        answer=as_json(record(function_aliases=array(ALIAS))),
        query=(("function_id", "only this function's", STRING), ALL_PROJECTS),
        errors=(400, 403, 404),
    ),
    Operation(
        "post",
        "/v1/aliases",
        "Create an alias",
        201,
        as_json(ALIAS),
        schemas.AliasBody,
        errors=(400, 404, 409),
    ),
    Operation("get", "/v1/aliases/{name}", "An alias", answer=as_json(ALIAS)),
    Operation(
        "put",
        "/v1/aliases/{name}",
        "Change an alias",
        answer=as_json(ALIAS),
        body=schemas.AliasBody,
        body_required=False,
    ),
    Operation("delete", "/v1/aliases/{name}", "Delete an alias", 204),
    Operation(
        "get",
        "/v1/tokens",
        "List the project's API tokens (admins; never their secrets)",
        answer=as_json(record(tokens=array(TOKEN))),
        query=(ALL_PROJECTS,),
        errors=(400, 403),
    ),
    Operation(
        "post",
        "/v1/tokens",
        "Make an API token of the project (admins); its secret is in this answer only",
        201,
        as_json(NEW_TOKEN),
        schemas.TokenCreate,
        body_required=False,
        errors=(400, 403),
    ),
    Operation(
        "get", "/v1/tokens/{id}", "An API token (admins)", answer=as_json(TOKEN), errors=(403, 404)
    ),
    Operation(
        "delete",
        "/v1/tokens/{id}",
        "Revoke an API token (admins): at once here, within a second on other nodes",
        answer=as_json(TOKEN),
        errors=(403, 404),
    ),
    Operation(
        "get",
        "/v1/executions",
        "List executions",
        answer=as_json(record(executions=array(EXECUTION), next=TEXT)),
        query=tuple(LIST_PARAMS),
        errors=(400, 403, 404),
    ),
    Operation(
        "post",
        "/v1/executions",
        "Run a function: sync (201, finished) or async (202, queued)",
        201,
        as_json(EXECUTION),
        schemas.ExecutionCreate,
        errors=(400, 404, 409, 413, 429),
        extra={
            200: ("a retry with the same id", as_json(EXECUTION)),
            202: ("queued", as_json(EXECUTION)),
        },
    ),
    Operation(
        "delete",
        "/v1/executions",
        "Purge finished executions",
        answer=as_json(record(deleted=INTEGER)),
        query=(
            ("keep_last", "keep this many newest", WHOLE),
            ("to_datetime", "purge older ones", TIME),
        ),
        errors=(400,),
    ),
    Operation(
        "get",
        "/v1/executions/{id}",
        "An execution (`?wait=S`: once it is final or S seconds passed)",
        answer=as_json(EXECUTION),
        query=(("wait", "seconds to wait for the end", {"type": "number", "minimum": 0}),),
    ),
    Operation(
        "delete", "/v1/executions/{id}", "Delete a finished execution", 204, errors=(404, 409)
    ),
    Operation("get", "/v1/executions/{id}/log", "What it printed (text)", answer=TEXT_PLAIN),
    Operation(
        "get",
        "/v1/executions/{id}/poll",
        "200 while pending, then 303 to its result",
        answer=as_json(record(message=STRING, status=enum(ExecutionStatus))),
        extra={303: ("finished: see /result", None)},
    ),
    Operation(
        "get",
        "/v1/executions/{id}/result",
        "Its result (400 if it failed, 409 while it runs)",
        answer=as_json(record(data=ANY)),
        errors=(400, 404, 409),
    ),
    Operation(
        "post",
        "/v1/executions/{id}/cancel",
        "Cancel a queued or running execution",
        answer=as_json(EXECUTION),
        body=schemas.ExecutionCancel,
        body_required=False,
        errors=(400, 404, 409),
    ),
)


def _parameters(op: Operation) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in op.path.split("/") if part.startswith("{")]
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_TYPES.get(name, STRING)}
        for name in names
    ]
    params += [
        {"name": name, "in": "query", "description": text, "schema": schema}
        for name, text, schema in op.query
    ]
    return params


def _body(op: Operation, models: dict[str, Any]) -> dict[str, Any] | None:
    if op.body is None:
        return None
    if isinstance(op.body, dict):
        content = {
            "multipart/form-data": {"schema": op.body},
            "application/x-www-form-urlencoded": {"schema": op.body},
            "application/json": {"schema": {"type": "object"}},
        }
    else:
        schema = op.body.model_json_schema(ref_template="#/components/schemas/{model}")
        models.update(schema.pop("$defs", {}))
        models[op.body.__name__] = schema
        content = as_json({"$ref": f"#/components/schemas/{op.body.__name__}"})
    return {"required": op.body_required, "content": content}


def _response(description: str, content: Content | None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if content is not None:
        response["content"] = content
    return response


def document() -> dict[str, Any]:
    models: dict[str, Any] = {"Error": ERROR}
    paths: dict[str, dict[str, Any]] = {}
    refused = as_json({"$ref": "#/components/schemas/Error"})
    for op in OPERATIONS:
        responses = {str(op.ok): _response("done", op.answer)}
        responses.update({str(code): _response(*answer) for code, answer in op.extra.items()})
        responses.update({str(code): _response("refused", refused) for code in op.errors})
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method}_{op.path}",
            "parameters": _parameters(op),
            "responses": responses,
        }
        if not op.public:
            # Needed unless the server listens on loopback only (then every request acts as
            # an admin of the default project).
            operation["security"] = [{"token": []}]
            responses["401"] = _response("no valid token", refused)
            responses["503"] = _response("the database is unreachable (Retry-After)", refused)
        if (body := _body(op, models)) is not None:
            operation["requestBody"] = body
        paths.setdefault(op.path, {})[op.method] = operation
    # A copy: the parts shared between operations are not the caller's to change.
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {"title": "Spinlet", "version": __version__},
            "paths": paths,
            "components": {
                "schemas": models,
                "securitySchemes": {
                    "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
                },
            },
        }
    )
