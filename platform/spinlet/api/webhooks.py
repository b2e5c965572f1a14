"""/v1/webhooks, and /v1/webhooks/{id}/invoke (no token: the id is the secret)"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

from aiohttp import web

from spinlet.api.bodies import json_limit, read_body, read_json
from spinlet.api.httpevent import ALWAYS, BadAnswer, event_of, response_of
from spinlet.api.keys import listing_project, project_of, services
from spinlet.api.middleware import error_body
from spinlet.api.schemas import WebhookBody, parse
from spinlet.api.serialize import Invoked, WebhookList, WebhookRecord, respond
from spinlet.domain import Execution, ExecutionStatus, Webhook, WebhookMode
from spinlet.services.webhooks import WebhookFields

routes = web.RouteTableDef()

INVOKE_PATH = "/v1/webhooks/{id}/invoke"


def _record(request: web.Request, webhook: Webhook) -> WebhookRecord:
    url = request.url.origin().with_path(INVOKE_PATH.format(id=webhook.id))
    return WebhookRecord.model_validate({**asdict(webhook), "webhook_url": str(url)})


async def _fields(request: web.Request) -> WebhookFields:
    body = parse(WebhookBody, await read_json(request, default={}))
    return WebhookFields(
        function=body.function_id,
        alias=body.function_alias,
        version=body.function_version,
        description=body.description,
        mode=body.mode,
    )


@routes.post("/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    webhook = await services(request).webhooks.create(project_of(request), await _fields(request))
    return respond(_record(request, webhook), status=201)


@routes.get("/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    webhooks = await services(request).webhooks.list(
        listing_project(request), request.query.get("function_id") or None
    )
    return respond(WebhookList(webhooks=[_record(request, w) for w in webhooks]))


@routes.get("/v1/webhooks/{id}")
async def get_webhook(request: web.Request) -> web.Response:
    webhook = await services(request).webhooks.get(project_of(request), request.match_info["id"])
    return respond(_record(request, webhook))


@routes.put("/v1/webhooks/{id}")
async def update_webhook(request: web.Request) -> web.Response:
    """Null (or absent) fields stay as they are, as the Qinling client expects."""
    webhook = await services(request).webhooks.update(
        project_of(request), request.match_info["id"], await _fields(request)
    )
    return respond(_record(request, webhook))


@routes.delete("/v1/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    await services(request).webhooks.delete(project_of(request), request.match_info["id"])
    return web.Response(status=204)


def _input(body: bytes) -> Any:
    """An async call's input: the body as JSON when it is JSON, else as text (None: empty)."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body.decode("utf-8", errors="replace")


@routes.post(INVOKE_PATH)
async def invoke_webhook(request: web.Request) -> web.Response:
    """Run the webhook's function: queued (202 `{"execution_id"}`, as Qinling) or, in http
    mode, at once, the function's answer shaping the response."""
    hooks = services(request).webhooks
    webhook = await hooks.called(request.match_info["id"])
    body = await read_body(request, json_limit(request))
    if webhook.mode is WebhookMode.ASYNC:
        execution = await hooks.run(webhook, _input(body))
        return respond(Invoked(execution_id=execution.id), status=202)
    event = event_of(request, body, request_id=str(uuid.uuid4()))
    execution = await hooks.run(webhook, event)
    return _answer(execution)


def _answer(execution: Execution) -> web.Response:
    """An http-mode call's response; a failed run (or an answer that is not a response) is a
    502 with a JSON error: its message, never its traceback."""
    headers = {"X-Spinlet-Execution-Id": execution.id}
    if execution.status is ExecutionStatus.SUCCESS:
        try:
            return response_of(execution.result, headers)
        except BadAnswer as exc:
            code, message = "bad_response", f"the function's answer is not a response: {exc}"
    else:
        error = execution.error
        code = f"execution_{execution.status.value}"
        message = error.message if error and error.message else f"the execution is {code[10:]}"
    return web.json_response(error_body(code, message), status=502, headers={**headers, **ALWAYS})
