"""/v1/aliases (addressed by name)"""

from __future__ import annotations

from aiohttp import web

from spinlet.api.bodies import read_json
from spinlet.api.keys import listing_project, project_of, services
from spinlet.api.schemas import AliasBody, parse
from spinlet.api.serialize import AliasList, AliasRecord, respond
from spinlet.domain import Routing
from spinlet.errors import ValidationFailed
from spinlet.services.aliases import AliasFields

routes = web.RouteTableDef()


async def _fields(request: web.Request) -> AliasFields:
    body = parse(AliasBody, await read_json(request, default={}))
    routing, clear = None, False
    if body.routing is not None:
        version, weight = body.routing.version, body.routing.weight
        if version is None and weight is None:
            clear = True
        elif version is None or weight is None:
            raise ValidationFailed(
                'routing needs both "version" and "weight" ({} removes the canary)'
            )
        else:
            routing = Routing(version=version, weight=weight)
    return AliasFields(
        name=body.name,
        function=body.function_id,
        version=body.function_version,
        description=body.description,
        routing=routing,
        clear_routing=clear,
    )


@routes.post("/v1/aliases")
async def create_alias(request: web.Request) -> web.Response:
    alias = await services(request).aliases.create(project_of(request), await _fields(request))
    return respond(AliasRecord.model_validate(alias), status=201)


@routes.get("/v1/aliases")
async def list_aliases(request: web.Request) -> web.Response:
    aliases = await services(request).aliases.list(
        listing_project(request), request.query.get("function_id") or None
    )
    return respond(AliasList(function_aliases=aliases))


@routes.get("/v1/aliases/{name}")
async def get_alias(request: web.Request) -> web.Response:
    alias = await services(request).aliases.get(project_of(request), request.match_info["name"])
    return respond(AliasRecord.model_validate(alias))


@routes.put("/v1/aliases/{name}")
async def update_alias(request: web.Request) -> web.Response:
    """Null (or absent) fields stay as they are, as the Qinling client expects."""
    alias = await services(request).aliases.update(
        project_of(request), request.match_info["name"], await _fields(request)
    )
    return respond(AliasRecord.model_validate(alias))


@routes.delete("/v1/aliases/{name}")
async def delete_alias(request: web.Request) -> web.Response:
    await services(request).aliases.delete(project_of(request), request.match_info["name"])
    return web.Response(status=204)
