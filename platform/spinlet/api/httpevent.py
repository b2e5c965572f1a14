"""An HTTP request as a function's event, and a function's answer as an HTTP response: the
shapes AWS Lambda function URLs use (payload format 2.0), so handlers written for them run.

The event carries the method, the path, the query, the headers (names in lower case, repeated
ones joined with commas) and the exact body: as text when it is UTF-8, else in base64 with
`isBase64Encoded: true`. The caller's `Cookie` and `X-Auth-Token` are not passed on.

A function answering `{"statusCode", "headers", "body", "isBase64Encoded"}` shapes the response;
any other answer is sent as JSON with 200. A response is served from the node's own origin, so
it can never set a cookie (`Set-Cookie` is dropped), and it always carries
`Content-Security-Policy: sandbox` and `X-Content-Type-Options: nosniff`; hop-by-hop and framing
headers are the server's own to write, not the function's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any

from aiohttp import web

#: Request headers a function is not given.
WITHHELD = frozenset({"cookie", "x-auth-token"})
#: Response headers a function may not set: cookies, hop-by-hop and framing headers, and those
#: every answer carries (set by the node).
DROPPED = frozenset(
    {
        "set-cookie",
        "set-cookie2",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-security-policy",
        "x-content-type-options",
    }
)
ALWAYS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class BadAnswer(ValueError):
    """The function's answer cannot be made into an HTTP response."""


def _joined(pairs: Any, *, lower: bool) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower() if lower else name
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def event_of(request: web.Request, body: bytes, request_id: str) -> dict[str, Any]:
    """The event of an HTTP request whose body is `body`."""
    headers = _joined(
        ((k, v) for k, v in request.headers.items() if k.lower() not in WITHHELD), lower=True
    )
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request.path,
        "rawQueryString": request.query_string,
        "headers": headers,
        "queryStringParameters": _joined(request.query.items(), lower=False) or None,
        "requestContext": {
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                "sourceIp": request.remote or "",
                "userAgent": request.headers.get("User-Agent", ""),
            },
            "requestId": request_id,
            "timeEpoch": int(time.time() * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def _headers(given: Any) -> dict[str, str]:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise BadAnswer("headers must be an object of names and values")
    kept: dict[str, str] = {}
    for name, value in given.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise BadAnswer(f"{name!r} is not a header name")
        if "\r" in text or "\n" in text or "\x00" in text:
            raise BadAnswer(f"the header {name!r} holds a line break")
        if name.lower() not in DROPPED:
            kept[name] = text
    return kept


def _shaped(answer: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    status = answer["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise BadAnswer(f"statusCode must be a number from 200 to 599, not {status!r}")
    headers = _headers(answer.get("headers"))
    body = answer.get("body")
    if body is None:
        data = b""
    elif answer.get("isBase64Encoded") is True:
        if not isinstance(body, str):
            raise BadAnswer("a body in base64 must be a string")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadAnswer("the body is not valid base64") from None
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json" if data else "text/plain"
    return status, headers, data


def response_of(result: Any, extra: dict[str, str]) -> web.Response:
    """The HTTP response a function's answer asks for (`BadAnswer` when it cannot be one)."""
    if isinstance(result, dict) and "statusCode" in result:
        status, headers, data = _shaped(result)
    else:
        status, headers = 200, {"Content-Type": "application/json"}
        data = json.dumps(result).encode()
    return web.Response(status=status, body=data, headers={**headers, **extra, **ALWAYS})
