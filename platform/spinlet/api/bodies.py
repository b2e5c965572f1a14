"""Reading request bodies in the formats clients send."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from spinlet.errors import BadRequest, ValidationFailed
from spinlet.services.functions import Upload


class MalformedJSON(BadRequest):
    """The request body is not valid JSON."""

    code = "malformed_json"


async def read_json(request: web.Request, *, default: Any = None) -> Any:
    raw = await request.read()
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedJSON(f"the request body is not valid JSON: {exc}") from None


async def read_function_body(request: web.Request) -> tuple[dict[str, Any], Upload | None]:
    """Fields and package of a function create/update: multipart, form or JSON."""
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.post()
        except (ValueError, BadHttpMessage) as exc:  # no boundary, a broken part
            raise BadRequest(f"the request body is not a valid form: {exc}") from None
        fields: dict[str, Any] = {}
        upload = None
        for key, value in form.items():
            if isinstance(value, web.FileField):
                if key == "package":
                    upload = Upload(data=value.file.read(), filename=value.filename)
            elif key == "package":
                upload = Upload(data=value.encode() if isinstance(value, str) else bytes(value))
            else:
                fields[key] = value
        return fields, upload
    body = await read_json(request, default={})
    if not isinstance(body, dict):
        raise ValidationFailed("the request body must be a JSON object")
    package = body.pop("package", None)
    if package is None:
        return body, None
    if not isinstance(package, str):
        raise ValidationFailed("package must be the package's bytes in base64")
    try:
        data = base64.b64decode(package, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("package must be the package's bytes in base64") from None
    filename = body.pop("filename", None)
    return body, Upload(data=data, filename=filename if isinstance(filename, str) else None)
