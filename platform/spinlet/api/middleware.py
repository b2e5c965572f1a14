"""Errors become JSON here, and only here: `{"error": {"code", "message"}, "faultstring"}`."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from spinlet.api.keys import SETTINGS
from spinlet.api.serialize import Error
from spinlet.errors import SpinletError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return Error.of(code, message, **extra)


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(error_body(code, message, **extra), status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SpinletError as exc:
        response = error_response(exc.status, exc.code, exc.message, **exc.details)
        if "retry_after" in exc.details:  # too many executions, the store unreachable
            response.headers["Retry-After"] = str(exc.details["retry_after"])
        return response
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_size
        return error_response(
            413, "too_large", f"the request body is larger than the limit of {limit} bytes"
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the server log")


@web.middleware
async def no_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a NUL character (U+0000) in the path or the query, as bodies do (`refuse_nul`)."""
    if "\x00" in request.path or "\x00" in request.query_string:
        return error_response(
            400, "validation_error", "the URL holds a NUL character (U+0000), which is not allowed"
        )
    return await handler(request)
