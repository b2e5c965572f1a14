"""/v1/tokens: a project's API tokens, managed by its admins (a new project's first token is
made on a node: `spinlet tokens create`)."""

from __future__ import annotations

from aiohttp import web

from spinlet.api.bodies import read_json
from spinlet.api.keys import listing_project, project_of, require_admin, services
from spinlet.api.schemas import TokenCreate, parse
from spinlet.api.serialize import NewToken, TokenList, TokenRecord, respond

routes = web.RouteTableDef()

MANAGING = "managing API tokens"


@routes.post("/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    require_admin(request, MANAGING)
    body = parse(TokenCreate, await read_json(request, default={}))
    token, secret = await services(request).tokens.create(project_of(request), body.role, body.name)
    return respond(NewToken.model_validate({**vars(token), "token": secret}), status=201)


@routes.get("/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    require_admin(request, MANAGING)
    tokens = await services(request).tokens.list(listing_project(request))
    return respond(TokenList(tokens=tokens))


@routes.get("/v1/tokens/{id}")
async def get_token(request: web.Request) -> web.Response:
    require_admin(request, MANAGING)
    token = await services(request).tokens.get(project_of(request), request.match_info["id"])
    return respond(TokenRecord.model_validate(token))


@routes.delete("/v1/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke (the record stays, with `revoked_at`): at once on this node, within a second on
    the others."""
    require_admin(request, MANAGING)
    token = await services(request).tokens.revoke(request.match_info["id"], project_of(request))
    return respond(TokenRecord.model_validate(token))
