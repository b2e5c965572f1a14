"""Reading request bodies in the formats clients send.

A body is measured before it is parsed: a `Content-Length` over the route's limit is a 413
before anything is read, and a chunked body is read only up to the limit. JSON routes read
`application/json` (and `…+json`), a body sent without a type, and the form type `curl -d`
sends (its body is read as JSON, as `curl -d '{"n": 10}'` means it); any other type is a 415.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from functools import partial
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMessage

from spinlet.api.keys import SETTINGS
from spinlet.errors import BadRequest, SpinletError, TooLarge, ValidationFailed
from spinlet.offloop import off_loop_if_big
from spinlet.services.functions import Upload

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
#: Room in a JSON body beside its input (the other fields, whitespace).
JSON_OVERHEAD = 64 * 1024


class MalformedJSON(BadRequest):
    """The request body is not valid JSON."""

    code = "malformed_json"


class UnsupportedMediaType(SpinletError):
    """The request body's Content-Type is not one this route reads."""

    code = "unsupported_media_type"
    status = 415


def json_limit(request: web.Request) -> int:
    """The largest JSON body a route reads (but function create/update): twice the input limit,
    room for an input at its limit sent pretty-printed or as a string holding JSON (as Qinling
    clients send it); the input itself is then measured, compact, against its own limit."""
    return 2 * request.app[SETTINGS].max_input_size + JSON_OVERHEAD


def _check_length(request: web.Request, limit: int) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the request body is larger than the limit of {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) by its Content-Length, or once more than `limit` bytes came."""
    _check_length(request, limit)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body.extend(chunk)
        if len(body) > limit:
            raise TooLarge(f"the request body is larger than the limit of {limit} bytes")
    return bytes(body)


def _check_json_type(request: web.Request, reads: str = "JSON (application/json)") -> None:
    if hdrs.CONTENT_TYPE not in request.headers:
        return
    kind = request.content_type
    if kind not in ("application/json", FORM) and not kind.endswith("+json"):
        raise UnsupportedMediaType(f"this route reads {reads}, not {kind}")


async def read_json(request: web.Request, *, default: Any = None, limit: int = 0) -> Any:
    """The JSON body (`default` when there is none), at most `limit` bytes (default:
    `json_limit`)."""
    if not request.body_exists:
        return default
    _check_json_type(request)
    raw = await read_body(request, limit or json_limit(request))
    if not raw.strip():
        return default
    try:
        return await off_loop_if_big(json.loads, raw, len(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        hint = " (it was sent as a form: send JSON)" if request.content_type == FORM else ""
        raise MalformedJSON(f"the request body is not valid JSON{hint}: {exc}") from None


async def read_function_body(request: web.Request) -> tuple[dict[str, Any], Upload | None]:
    """Fields and package of a function create/update: multipart, form or JSON."""
    max_size = request.app[SETTINGS].max_request_size
    if request.content_type in (MULTIPART, FORM):
        _check_length(request, max_size)
        try:
            form = await request.post()
        except (ValueError, BadHttpMessage) as exc:  # no boundary, a broken part
            raise BadRequest(f"the request body is not a valid form: {exc}") from None
        fields: dict[str, Any] = {}
        upload = None
        for key, value in form.items():
            if isinstance(value, web.FileField):
                if key != "package":
                    raise ValidationFailed(
                        f"the form field {key!r} is a file; only 'package' may be one"
                    )
                # aiohttp kept the file on disk: read it in a thread.
                data = await asyncio.to_thread(value.file.read)
                upload = Upload(data=data, filename=value.filename)
            elif key == "package":
                upload = Upload(data=value.encode() if isinstance(value, str) else bytes(value))
            else:
                fields[key] = value
        return fields, upload
    _check_json_type(request, f"{MULTIPART}, a form ({FORM}) or JSON (application/json)")
    body = await read_json(request, default={}, limit=max_size)
    if not isinstance(body, dict):
        raise ValidationFailed("the request body must be a JSON object")
    package = body.pop("package", None)
    if package is None:
        return body, None
    if not isinstance(package, str):
        raise ValidationFailed("package must be the package's bytes in base64")
    try:
        data = await off_loop_if_big(
            partial(base64.b64decode, validate=True), package, len(package)
        )
    except (binascii.Error, ValueError):
        raise ValidationFailed("package must be the package's bytes in base64") from None
    filename = body.pop("filename", None)
    return body, Upload(data=data, filename=filename if isinstance(filename, str) else None)
