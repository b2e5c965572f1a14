"""/v1/runtimes"""

from __future__ import annotations

from aiohttp import web

from spinlet.api.bodies import read_json
from spinlet.api.keys import project_of, require_admin, services
from spinlet.api.schemas import RuntimeCreate, RuntimeUpdate, parse
from spinlet.api.serialize import Pool, RuntimeList, RuntimeRecord, respond

routes = web.RouteTableDef()


@routes.get("/v1/runtimes")
async def list_runtimes(request: web.Request) -> web.Response:
    runtimes = await services(request).runtimes.list(project_of(request))
    return respond(RuntimeList(runtimes=runtimes))


@routes.post("/v1/runtimes")
async def create_runtime(request: web.Request) -> web.Response:
    require_admin(request, "registering a runtime")
    body = parse(RuntimeCreate, await read_json(request))
    runtime = await services(request).runtimes.create(
        project_of(request), name=body.name, image=body.image, description=body.description
    )
    return respond(RuntimeRecord.model_validate(runtime), status=201)


@routes.get("/v1/runtimes/{id}")
async def get_runtime(request: web.Request) -> web.Response:
    runtime = await services(request).runtimes.get(project_of(request), request.match_info["id"])
    return respond(RuntimeRecord.model_validate(runtime))


@routes.put("/v1/runtimes/{id}")
async def update_runtime(request: web.Request) -> web.Response:
    require_admin(request, "changing a runtime")
    body = parse(RuntimeUpdate, await read_json(request))
    runtime = await services(request).runtimes.update(
        project_of(request), request.match_info["id"], body.model_dump()
    )
    return respond(RuntimeRecord.model_validate(runtime))


@routes.delete("/v1/runtimes/{id}")
async def delete_runtime(request: web.Request) -> web.Response:
    require_admin(request, "deleting a runtime")
    await services(request).runtimes.delete(project_of(request), request.match_info["id"])
    return web.Response(status=204)


@routes.get("/v1/runtimes/{id}/pool")
async def runtime_pool(request: web.Request) -> web.Response:
    pool = await services(request).runtimes.pool(project_of(request), request.match_info["id"])
    return respond(Pool.model_validate({"name": pool.runtime_id, "capacity": pool}))


@routes.post("/v1/runtimes/{id}/build")
async def build_runtime(request: web.Request) -> web.Response:
    """Start building a shipped runtime's image on this node (202: it goes on in the
    background; the runtime's status says when it is `available`)."""
    require_admin(request, "building a runtime")
    runtime = await services(request).runtimes.build(project_of(request), request.match_info["id"])
    return respond(RuntimeRecord.model_validate(runtime), status=202)
