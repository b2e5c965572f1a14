"""The OpenAPI document of the v1 API, served at `/v1/openapi.json`.

Written as a table of operations, one per route; a test checks it against the router, so a
route cannot be added without being described, and tests/integration/test_fuzz.py checks the
server's answers against it. The schemas come from the pydantic models the handlers read the
request bodies with and write the answers with (`api/serialize.py`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from spinlet import __version__
from spinlet.api import schemas
from spinlet.api.filters import MAX_PAGE
from spinlet.api.serialize import (
    AliasList,
    AliasRecord,
    Error,
    ExecutionPage,
    ExecutionRecord,
    FunctionList,
    FunctionRecord,
    Health,
    Invoked,
    JobList,
    JobRecord,
    NewToken,
    Pending,
    Pool,
    Purged,
    Result,
    RunFailed,
    RuntimeList,
    RuntimeRecord,
    Scaled,
    Service,
    TokenList,
    TokenRecord,
    VersionList,
    VersionRecord,
    WebhookList,
    WebhookRecord,
    WorkerList,
)
from spinlet.queries import FILTER_FIELDS, OPS, SORT_FIELDS

#: The media types of an answer, each with its schema: a JSON schema (`{}`: any JSON), or the
#: model that writes the answer (`api/serialize.py`), whose schema the document then holds.
Content = dict[str, Any]
#: An answer: a model (as JSON), its media types, or None for none.
Answer = type[BaseModel] | Content | None

STRING: dict[str, Any] = {"type": "string"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
REF = "#/components/schemas/{model}"


def as_json(schema: dict[str, Any] | type[BaseModel]) -> Content:
    return {"application/json": {"schema": schema}}


ZIP: Content = {"application/zip": {"schema": {"type": "string", "format": "binary"}}}
TEXT_PLAIN: Content = {"text/plain": {"schema": STRING}}

#: A function's form: its package, and the fields of the JSON body, each as text.
FUNCTION_FORM = {
    "type": "object",
    "properties": {
        "package": {"type": "string", "format": "binary", "description": "a .py file or a .zip"},
        **{name: STRING for name in schemas.FunctionBody.model_fields},
    },
}

ALL_PROJECTS = ("all_projects", "true for every project's (admins only: 403 otherwise)", BOOLEAN)
FILTER_HELP = f"a value, or op:value with op one of {' '.join(OPS)}"
#: Query parameters of the execution list: filters, then paging and sorting.
LIST_PARAMS = (
    *((name, FILTER_HELP, STRING) for name in FILTER_FIELDS),
    (
        "limit",
        f"page size (1 to {MAX_PAGE}, default 100)",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    ),
    ("marker", "the id of the previous page's last execution", STRING),
    ("id_prefix", "only executions whose id starts with these hex digits", STRING),
    ("sort_keys", f"comma-separated: {' '.join(SORT_FIELDS)}", STRING),
    ("sort_dirs", "comma-separated asc or desc, one per sort key", STRING),
    ("include_output", "true to include results", BOOLEAN),
    ("include_completed", "false for queued and running ones only", BOOLEAN),
    ALL_PROJECTS,
)
DOWNLOAD = (("download", "true for the package itself", BOOLEAN),)
WHOLE: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": schemas.MAX_WHOLE}
#: Path parameters that are not strings.
PATH_TYPES = {"number": WHOLE}

#: The errors an operation may answer, each with the `Error` body. Any may answer 400 (a NUL
#: in its URL, say) and 403 (a page of another origin, or a Host the node does not serve:
#: `api/browsers.py`); those that need a token 401 and 503; those with a path parameter 404;
#: those with a body 415. The others are listed by each operation.
ERRORS = {
    400: "the request is not valid",
    401: "no valid token",
    403: "refused: admins only, a page of another origin, or a Host the node does not serve",
    404: "not found",
    409: "it conflicts with the current state",
    413: "the body is too large",
    415: "a body of a type it does not read",
    429: "too many executions at once (Retry-After)",
    503: "unavailable now: the database or the container engine does not answer (Retry-After)",
}

#: What a `400` of registering an image (or changing it) may say.
INVALID_RUNTIME = (
    "`image_not_found`: the image is not on the node; `invalid_runtime`: it failed the runtime "
    "check (a server answers `/health` in the protocol version the node speaks, loads and runs "
    "a tiny function): `error.checks` lists each check, whether it passed and why"
)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    ok: int = 200  # the success status
    answer: Answer = None  # the success body
    body: type[BaseModel] | dict[str, Any] | None = None  # a model, or a multipart schema
    body_required: bool = True
    query: tuple[tuple[str, str, dict[str, Any]], ...] = ()  # name, description, schema
    errors: tuple[int, ...] = ()  # those not every such operation may answer (`ERRORS`)
    public: bool = False  # answered without a token (it describes the server, or a webhook)
    any_origin: bool = False  # a web page of any origin may call it (a webhook's URL)
    # other statuses it answers: their description and body
    extra: dict[int, tuple[str, Answer]] = field(default_factory=dict)
    # what some of its errors mean for it, beside what they mean for any (`ERRORS`)
    notes: dict[int, str] = field(default_factory=dict)

    @property
    def answers(self) -> dict[int, tuple[str, Content | None]]:
        """Each status but the errors': its description, and its body's media types."""
        shown = {self.ok: ("done", self.answer), **self.extra}
        return {code: (text, _media(answer)) for code, (text, answer) in shown.items()}

    @property
    def refusals(self) -> list[int]:
        """The errors it may answer."""
        codes = {400, 403, *self.errors}
        if not self.public:
            codes |= {401, 503}
        if "{" in self.path:
            codes.add(404)
        if self.body is not None:
            codes.add(415)
        return sorted(codes)


def _scaling(action: str, summary: str) -> Operation:
    """`scale_up` or `scale_down` of a function (`{"count": N}`, default 1)."""
    path = f"/v1/functions/{{id}}/{action}"
    body = schemas.ScaleBody
    return Operation("post", path, summary, 202, Scaled, body, body_required=False, errors=(413,))


def _media(answer: Answer) -> Content | None:
    return as_json(answer) if isinstance(answer, type) else answer


OPERATIONS = (
    Operation("get", "/", "Service name and version", answer=Service, public=True),
    Operation("get", "/v1", "Service name and version", answer=Service, public=True),
    Operation("get", "/health", "Liveness", answer=Health, public=True),
    Operation(
        "get",
        "/ready",
        "Readiness: the database and the container engine answer, the runtime image is there",
        answer=Health,
        errors=(503,),
        public=True,
    ),
    Operation("get", "/metrics", "Prometheus metrics (text; admins)", answer=TEXT_PLAIN),
    Operation(
        "get",
        "/v1/openapi.json",
        "This document",
        answer=as_json({"type": "object"}),
        public=True,
    ),
    Operation("get", "/v1/runtimes", "List runtimes", answer=RuntimeList),
    Operation(
        "post",
        "/v1/runtimes",
        "Register a runtime image (admins): it is checked first",
        201,
        RuntimeRecord,
        schemas.RuntimeCreate,
        errors=(409,),
        notes={400: INVALID_RUNTIME},
    ),
    Operation("get", "/v1/runtimes/{id}", "A runtime, by id or name", answer=RuntimeRecord),
    Operation(
        "put",
        "/v1/runtimes/{id}",
        "Change a runtime (admins): a new image is checked first",
        answer=RuntimeRecord,
        body=schemas.RuntimeUpdate,
        errors=(409,),
        notes={400: INVALID_RUNTIME},
    ),
    Operation("delete", "/v1/runtimes/{id}", "Delete an unused runtime (admins)", 204),
    Operation("get", "/v1/runtimes/{id}/pool", "The runtime's containers", answer=Pool),
    Operation(
        "post",
        "/v1/runtimes/{id}/build",
        "Build a shipped runtime's image on this node, in the background (admins); "
        "a runtime registered by an admin is not built by a node (409)",
        202,
        RuntimeRecord,
        errors=(409,),
    ),
    Operation("get", "/v1/functions", "List functions", answer=FunctionList, query=(ALL_PROJECTS,)),
    Operation(
        "post",
        "/v1/functions",
        "Upload a function (multipart, JSON with a base64 package, or a form)",
        201,
        FunctionRecord,
        FUNCTION_FORM,
        errors=(404, 409, 413),
    ),
    Operation(
        "get",
        "/v1/functions/{id}",
        "A function, by id or name (`?download=true`: its package)",
        answer={**as_json(FunctionRecord), **ZIP},
        query=DOWNLOAD,
    ),
    Operation(
        "put",
        "/v1/functions/{id}",
        "Change a function (null fields stay as they are)",
        answer=FunctionRecord,
        body=FUNCTION_FORM,
        body_required=False,
        errors=(409, 413),
    ),
    Operation("delete", "/v1/functions/{id}", "Delete a function", 204),
    Operation(
        "post",
        "/v1/functions/{id}/rebuild",
        "Resolve the function's requirements again (202: `building` until its layer is ready)",
        202,
        FunctionRecord,
        errors=(409,),
    ),
    Operation(
        "post",
        "/v1/functions/{id}/invoke",
        "Run a function: the body is its input, the result the answer",
        answer=as_json({}),
        query=(
            ("version", "a version number (0: the current code)", WHOLE),
            ("alias", "run through this alias", STRING),
            ("async", "true to queue it (202)", BOOLEAN),
        ),
        errors=(409, 413, 429),
        extra={
            202: ("queued", ExecutionRecord),
            502: (
                "the execution failed: `error.code` is `execution_<status>`, `error.message` and "
                "`faultstring` its message, `error.type` and `error.traceback` its error's",
                RunFailed,
            ),
        },
    ),
    Operation(
        "get",
        "/v1/functions/{id}/workers",
        "The function's warm containers on the live nodes of the fleet",
        answer=WorkerList,
    ),
    _scaling(
        "scale_up",
        "Keep `count` more containers initialised for its current code (202: the nodes with "
        "room start them; the answer says how many are held now)",
    ),
    _scaling(
        "scale_down",
        "Keep `count` fewer provisioned containers (idle ones go now, busy ones once they end)",
    ),
    Operation(
        "post",
        "/v1/functions/{id}/detach",
        "Release every provisioned container of the function",
        202,
        Scaled,
    ),
    Operation(
        "get", "/v1/functions/{id}/versions", "List a function's versions", answer=VersionList
    ),
    Operation(
        "post",
        "/v1/functions/{id}/versions",
        "Publish the current code as a version (200: unchanged, the latest)",
        201,
        VersionRecord,
        schemas.VersionCreate,
        body_required=False,
        errors=(409,),
        extra={200: ("nothing changed: the latest version", VersionRecord)},
    ),
    Operation(
        "get",
        "/v1/functions/{id}/versions/{number}",
        "A version (`?download=true`: its package)",
        answer={**as_json(VersionRecord), **ZIP},
        query=DOWNLOAD,
    ),
    Operation(
        "delete", "/v1/functions/{id}/versions/{number}", "Delete a version no alias uses", 204
    ),
    Operation(
        "get",
        "/v1/aliases",
        "List aliases",
        answer=AliasList,
        query=(("function_id", "only this function's", STRING), ALL_PROJECTS),
        errors=(404,),
    ),
    Operation(
        "post",
        "/v1/aliases",
        "Create an alias",
        201,
        AliasRecord,
        schemas.AliasBody,
        errors=(404, 409),
    ),
    Operation("get", "/v1/aliases/{name}", "An alias", answer=AliasRecord),
    Operation(
        "put",
        "/v1/aliases/{name}",
        "Change an alias",
        answer=AliasRecord,
        body=schemas.AliasBody,
        body_required=False,
    ),
    Operation("delete", "/v1/aliases/{name}", "Delete an alias", 204),
    Operation("get", "/v1/jobs", "List cron jobs", answer=JobList, query=(ALL_PROJECTS,)),
    Operation(
        "post",
        "/v1/jobs",
        "Create a cron job: an async execution at each tick of `pattern`, from "
        "`first_execution_time`, `count` times",
        201,
        JobRecord,
        schemas.JobBody,
        errors=(404, 413),
    ),
    Operation("get", "/v1/jobs/{id}", "A cron job, with its last execution", answer=JobRecord),
    Operation(
        "put",
        "/v1/jobs/{id}",
        "Change a cron job (null fields stay as they are): `status` pauses, resumes or "
        "cancels it; `next_execution_time` re-times it",
        answer=JobRecord,
        body=schemas.JobBody,
        body_required=False,
        errors=(409, 413),
    ),
    Operation("delete", "/v1/jobs/{id}", "Delete a cron job (its executions stay)", 204),
    Operation(
        "get",
        "/v1/webhooks",
        "List webhooks",
        answer=WebhookList,
        query=(("function_id", "only this function's", STRING), ALL_PROJECTS),
        errors=(404,),
    ),
    Operation(
        "post",
        "/v1/webhooks",
        "Create a webhook: a URL that runs a function without a token",
        201,
        WebhookRecord,
        schemas.WebhookBody,
        errors=(404,),
    ),
    Operation("get", "/v1/webhooks/{id}", "A webhook", answer=WebhookRecord),
    Operation(
        "put",
        "/v1/webhooks/{id}",
        "Change a webhook (null fields stay as they are)",
        answer=WebhookRecord,
        body=schemas.WebhookBody,
        body_required=False,
    ),
    Operation("delete", "/v1/webhooks/{id}", "Delete a webhook: its URL is a 404 at once", 204),
    Operation(
        "post",
        "/v1/webhooks/{id}/invoke",
        "Call a webhook, without a token (any body): async mode queues an execution (202); "
        "http mode runs it at once with an HTTP event and answers what the function answers "
        "(`{statusCode, headers, body, isBase64Encoded}`, or any JSON as a 200)",
        202,
        Invoked,
        body={},
        body_required=False,
        errors=(409, 413, 429, 503),
        public=True,
        any_origin=True,
        extra={
            200: (
                "http mode: what the function answered (any status it chose)",
                {"*/*": {"schema": {}}},
            ),
            502: ("http mode: the function failed, or its answer is not a response", Error),
        },
        notes={429: "`rate_limited`: the project's webhook calls per second on this node"},
    ),
    Operation(
        "get",
        "/v1/tokens",
        "List the project's API tokens (admins; never their secrets)",
        answer=TokenList,
        query=(ALL_PROJECTS,),
    ),
    Operation(
        "post",
        "/v1/tokens",
        "Make an API token of the project (admins); its secret is in this answer only",
        201,
        NewToken,
        schemas.TokenCreate,
        body_required=False,
    ),
    Operation("get", "/v1/tokens/{id}", "An API token (admins)", answer=TokenRecord),
    Operation(
        "delete",
        "/v1/tokens/{id}",
        "Revoke an API token (admins): at once here, within a second on other nodes",
        answer=TokenRecord,
    ),
    Operation(
        "get",
        "/v1/executions",
        "List executions",
        answer=ExecutionPage,
        query=LIST_PARAMS,
        errors=(404,),
    ),
    Operation(
        "post",
        "/v1/executions",
        "Run a function: sync (201, finished) or async (202, queued; `scheduled` until its "
        "`schedule`)",
        201,
        ExecutionRecord,
        schemas.ExecutionCreate,
        errors=(404, 409, 413, 429),
        extra={
            200: ("a retry with the same id", ExecutionRecord),
            202: ("queued", ExecutionRecord),
        },
    ),
    Operation(
        "delete",
        "/v1/executions",
        "Purge finished executions",
        answer=Purged,
        query=(
            ("keep_last", "keep this many newest", WHOLE),
            ("to_datetime", "purge older ones", TIME),
        ),
    ),
    Operation(
        "get",
        "/v1/executions/{id}",
        "An execution (`?wait=S`: once it is final or S seconds passed)",
        answer=ExecutionRecord,
        query=(("wait", "seconds to wait for the end", {"type": "number", "minimum": 0}),),
    ),
    Operation("delete", "/v1/executions/{id}", "Delete a finished execution", 204, errors=(409,)),
    Operation(
        "get",
        "/v1/executions/{id}/log",
        "What it printed (text); `follow=true`: as it prints it, until it ends (chunked text, "
        "or Server-Sent Events with `Accept: text/event-stream`: `log` events whose id is the "
        "byte offset, `Last-Event-ID` resumes, an `end` event carries the final status)",
        answer={**TEXT_PLAIN, "text/event-stream": {"schema": STRING}},
        query=(
            ("follow", "true to stream it as it grows, until the execution ends", BOOLEAN),
            ("timestamps", "with follow: each line starts with its time and stream", BOOLEAN),
        ),
        extra={204: ("Last-Event-ID: end (the stream had ended): nothing more", None)},
    ),
    Operation(
        "get",
        "/v1/executions/{id}/poll",
        "200 while pending, then 303 to its result",
        answer=Pending,
        extra={303: ("finished: see /result", None)},
    ),
    Operation(
        "get",
        "/v1/executions/{id}/result",
        "Its result (400 if it failed, 409 while it runs)",
        answer=Result,
        errors=(409,),
    ),
    Operation(
        "post",
        "/v1/executions/{id}/cancel",
        "Cancel a scheduled, queued or running execution",
        answer=ExecutionRecord,
        body=schemas.ExecutionCancel,
        body_required=False,
        errors=(409,),
    ),
)

#: The paths anyone may call without a token: they describe the server, not any project's data,
#: or they are a webhook's URL, whose id is the secret.
PUBLIC_PATHS = frozenset(op.path for op in OPERATIONS if op.public)
#: The paths a web page of another origin may call (`api/browsers.py`).
CROSS_ORIGIN_PATHS = frozenset(op.path for op in OPERATIONS if op.any_origin)


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


#: The reference to each model's schema, as it reads request bodies or writes answers.
Models = dict[tuple[Any, JsonSchemaMode], dict[str, Any]]


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Error, "serialization"): None}
    for op in OPERATIONS:
        if isinstance(op.body, type):
            found[(op.body, "validation")] = None
        for _, content in op.answers.values():
            for media in (content or {}).values():
                if isinstance(media["schema"], type):
                    found[(media["schema"], "serialization")] = None
    return list(found)


def _body(op: Operation, refs: Models) -> dict[str, Any] | None:
    if op.body is None:
        return None
    if isinstance(op.body, dict):
        content = {
            "multipart/form-data": {"schema": op.body},
            "application/x-www-form-urlencoded": {"schema": op.body},
            "application/json": {"schema": {"type": "object"}},
        }
    else:
        content = as_json(refs[(op.body, "validation")])
    return {"required": op.body_required, "content": content}


def _response(description: str, content: Content | None, refs: Models) -> dict[str, Any]:
    """A response, its models replaced by references to their schemas."""
    response: dict[str, Any] = {"description": description}
    if content is not None:
        response["content"] = {
            media: {"schema": refs[(s, "serialization")] if isinstance(s, type) else s}
            for media, s in ((media, value["schema"]) for media, value in content.items())
        }
    return response


def _operation(op: Operation, refs: Models) -> dict[str, Any]:
    responses = {str(code): _response(text, c, refs) for code, (text, c) in op.answers.items()}
    for code in op.refusals:
        text = ERRORS[code] + (f"; {op.notes[code]}" if code in op.notes else "")
        responses[str(code)] = _response(text, as_json(Error), refs)
    operation: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method}_{op.path}",
        "parameters": _parameters(op),
        "responses": responses,
    }
    if not op.public:
        # Needed unless the server listens on loopback only (then every request acts as an
        # admin of the default project).
        operation["security"] = [{"token": []}]
    if (body := _body(op, refs)) is not None:
        operation["requestBody"] = body
    return operation


def document() -> dict[str, Any]:
    refs, models = models_json_schema(_models(), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    # A copy: the parts shared between operations are not the caller's to change.
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {"title": "Spinlet", "version": __version__},
            "paths": paths,
            "components": {
                "schemas": models.get("$defs", {}),
                "securitySchemes": {
                    "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
                },
            },
        }
    )
