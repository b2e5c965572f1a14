"""/v1/executions and /v1/functions/{id}/invoke"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from spinlet.api.bodies import read_json
from spinlet.api.filters import execution_query, flag, parse_time, whole_number
from spinlet.api.keys import listing_project, project_of, services
from spinlet.api.logstream import END_ID, stream_log
from spinlet.api.middleware import error_body
from spinlet.api.schemas import ExecutionCancel, ExecutionCreate, parse
from spinlet.api.serialize import (
    ExecutionPage,
    ExecutionRecord,
    Pending,
    Purged,
    Result,
    RunFailed,
    RunFailedError,
    respond,
)
from spinlet.domain import Execution, ExecutionSource, ExecutionStatus
from spinlet.errors import ValidationFailed
from spinlet.services.executions import ExecutionRequest

routes = web.RouteTableDef()

#: A listing without `include_output=true` leaves the results out.
WITHOUT_RESULTS = {"executions": {"__all__": {"result"}}}


def _location(execution: Execution) -> str:
    return f"/v1/executions/{execution.id}"


def _created(execution: Execution, created: bool) -> web.Response:
    """201 for a finished sync execution, 202 for a queued one, 200 for an idempotent retry."""
    headers = {}
    if not created:
        status = 200
    elif execution.sync:
        status = 201
    else:
        status, headers = 202, {"Location": _location(execution)}
    return respond(ExecutionRecord.model_validate(execution), status=status, headers=headers)


@routes.post("/v1/executions")
async def create_execution(request: web.Request) -> web.Response:
    body = parse(ExecutionCreate, await read_json(request))
    execution, created = await services(request).executions.create(
        project_of(request),
        ExecutionRequest(
            function=body.function_id,
            alias=body.function_alias,
            version=body.function_version,
            input=body.input,
            sync=body.sync,
            description=body.description,
            id=str(body.id) if body.id else None,
            source_execution_id=body.source_execution_id,
            schedule=body.schedule,
        ),
    )
    return _created(execution, created)


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    return whole_number(raw, name)


@routes.post("/v1/functions/{id}/invoke")
async def invoke_function(request: web.Request) -> web.Response:
    sync = not flag(request.query, "async", False)
    execution, _ = await services(request).executions.create(
        project_of(request),
        ExecutionRequest(
            function=request.match_info["id"],
            alias=request.query.get("alias") or None,
            version=_int_param(request, "version") or 0,
            input=await read_json(request),
            sync=sync,
            source=ExecutionSource.INVOKE,
        ),
    )
    headers = {
        "X-Spinlet-Execution-Id": execution.id,
        "X-Spinlet-Execution-Status": execution.status.value,
    }
    if not sync:
        headers["Location"] = _location(execution)
        return respond(ExecutionRecord.model_validate(execution), status=202, headers=headers)
    if execution.status is ExecutionStatus.SUCCESS:
        return web.Response(
            text=json.dumps(execution.result), content_type="application/json", headers=headers
        )
    return respond(_run_failed(execution), status=502, headers=headers)


def _run_failed(execution: Execution) -> RunFailed:
    """The 502 body of an `/invoke` that did not succeed: the standard error body (code
    `execution_<status>`, the execution's error message) whose `error` also carries the rest of
    the execution's error (`type`, `traceback`), with `status` and `status_reason` beside it."""
    error = execution.error
    status, reason = execution.status.value, execution.status_reason
    message = error.message if error and error.message else ""
    if not message:
        message = f"the execution did not succeed: it is {status}"
        message += f" ({reason})" if reason else ""
    return RunFailed(
        error=RunFailedError(
            code=f"execution_{status}",
            message=message,
            type=error.type if error else None,
            traceback=error.traceback if error else "",
        ),
        faultstring=message,
        status=execution.status,
        status_reason=reason,
    )


@routes.get("/v1/executions")
async def list_executions(request: web.Request) -> web.Response:
    query = execution_query(listing_project(request), request.query)
    executions = await services(request).executions.list(query)
    next_link = None
    if len(executions) == query.limit:
        next_link = str(request.url.update_query(marker=executions[-1].id))
    page = ExecutionPage(executions=executions, next=next_link)
    return respond(page, exclude=None if query.include_output else WITHOUT_RESULTS)


@routes.delete("/v1/executions")
async def purge_executions(request: web.Request) -> web.Response:
    to_datetime = request.query.get("to_datetime")
    deleted = await services(request).executions.purge(
        project_of(request),
        keep_last=_int_param(request, "keep_last"),
        to_datetime=parse_time(to_datetime, "to_datetime") if to_datetime else None,
    )
    return respond(Purged(deleted=deleted))


async def _get(request: web.Request, wait: float = 0.0) -> Execution:
    return await services(request).executions.get(
        project_of(request), request.match_info["id"], wait=wait
    )


@routes.get("/v1/executions/{id}")
async def get_execution(request: web.Request) -> web.Response:
    raw = request.query.get("wait", "")
    try:
        wait = float(raw) if raw else 0.0
    except ValueError:
        raise ValidationFailed("wait must be a number of seconds") from None
    if wait < 0:
        raise ValidationFailed("wait must be a number of seconds")
    return respond(ExecutionRecord.model_validate(await _get(request, wait)))


@routes.get("/v1/executions/{id}/poll")
async def poll_execution(request: web.Request) -> web.Response:
    execution = await _get(request)
    if not execution.status.is_final:
        return respond(Pending(message="Result is not ready yet", status=execution.status))
    raise web.HTTPSeeOther(location=f"{_location(execution)}/result")


def _result_error(http_status: int, code: str, text: str, extra: dict[str, Any]) -> web.Response:
    """An error body with the fields `/poll` and `/result` clients read on top."""
    return web.json_response({**error_body(code, text), **extra}, status=http_status)


@routes.get("/v1/executions/{id}/result")
async def execution_result(request: web.Request) -> web.Response:
    execution = await _get(request)
    if not execution.status.is_final:
        return _result_error(
            409, "not_ready", "Result is not ready yet", {"message": "Result is not ready yet"}
        )
    if execution.expired:
        return _result_error(404, "expired", "the result has expired", {"message": "Expired"})
    if execution.status is not ExecutionStatus.SUCCESS:
        error = execution.error
        reason = error.as_json() if error else {"type": execution.status_reason, "message": ""}
        return _result_error(
            400,
            "rejected",
            f"the execution ended {execution.status.value}",
            {"message": "Rejected", "reason": reason, "status": execution.status.value},
        )
    return respond(Result(data=execution.result))


@routes.get("/v1/executions/{id}/log")
async def execution_log(request: web.Request) -> web.StreamResponse:
    """The stored log; with `follow=true`, the log as it grows until the execution ends
    (chunked text, or Server-Sent Events: `api/logstream.py`)."""
    executions = services(request).executions
    if not flag(request.query, "follow", False):
        logs = await executions.logs(project_of(request), request.match_info["id"])
        return web.Response(text=logs, content_type="text/plain")
    timestamps = flag(request.query, "timestamps", False)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    last_id = request.headers.get("Last-Event-ID", "").strip() if sse else ""
    after = 0
    if last_id and last_id != END_ID:
        if not last_id.isdigit():
            raise ValidationFailed("Last-Event-ID must be an id this log sent")
        after = int(last_id)
    execution, pieces = await executions.follow(
        project_of(request), request.match_info["id"], after
    )
    if last_id == END_ID:  # a browser reconnecting after the end: 204 stops it
        return web.Response(status=204)
    return await stream_log(request, execution, pieces, sse=sse, timestamps=timestamps)


@routes.post("/v1/executions/{id}/cancel")
async def cancel_execution(request: web.Request) -> web.Response:
    body = parse(ExecutionCancel, await read_json(request, default={}))
    execution = await services(request).executions.cancel(
        project_of(request), request.match_info["id"], kill=body.kill
    )
    return respond(ExecutionRecord.model_validate(execution))


@routes.delete("/v1/executions/{id}")
async def delete_execution(request: web.Request) -> web.Response:
    await services(request).executions.delete(project_of(request), request.match_info["id"])
    return web.Response(status=204)
