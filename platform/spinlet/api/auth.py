"""Who a request acts for: the project and role of its `X-Auth-Token` (or bearer token).

With auth off (a server only this machine can reach), every request acts as an admin of the
default project. The routes the operation table marks public (`api/openapi.py`) need no token:
those describing the server, and a webhook's URL (its id is the secret).
The token itself is never logged.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from spinlet.api.keys import PRINCIPAL, SERVICES, SETTINGS, route_path
from spinlet.api.openapi import PUBLIC_PATHS
from spinlet.domain import DEFAULT_PROJECT, Principal, Role

TOKEN_HEADER = "X-Auth-Token"

_ANONYMOUS_ADMIN = Principal(project_id=DEFAULT_PROJECT, role=Role.ADMIN)


def request_token(request: web.Request) -> str | None:
    token = request.headers.get(TOKEN_HEADER)
    if token is None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = credentials
    return token.strip() if token else None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.app[SETTINGS].auth_enabled:
        request[PRINCIPAL] = _ANONYMOUS_ADMIN
    elif route_path(request) not in PUBLIC_PATHS:
        tokens = request.app[SERVICES].tokens
        request[PRINCIPAL] = await tokens.authenticate(request_token(request))
    return await handler(request)
