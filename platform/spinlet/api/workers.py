"""/v1/functions/{id}/workers, …/scale_up, …/scale_down, …/detach (Qinling's function workers)"""

from __future__ import annotations

from aiohttp import web

from spinlet.api.bodies import read_json
from spinlet.api.keys import project_of, services
from spinlet.api.schemas import ScaleBody, parse
from spinlet.api.serialize import Scaled, WorkerList, WorkerRecord, respond

routes = web.RouteTableDef()


@routes.get("/v1/functions/{id}/workers")
async def list_workers(request: web.Request) -> web.Response:
    found = await services(request).workers.of_function(
        project_of(request), request.match_info["id"]
    )
    return respond(WorkerList(workers=[WorkerRecord.model_validate(w) for w in found]))


async def _scale(request: web.Request, delta: int | None) -> web.Response:
    scaled = await services(request).workers.scale(
        project_of(request), request.match_info["id"], delta
    )
    return respond(Scaled.model_validate(scaled), status=202)


@routes.post("/v1/functions/{id}/scale_up")
async def scale_up(request: web.Request) -> web.Response:
    body = parse(ScaleBody, await read_json(request, default={}))
    return await _scale(request, body.count)


@routes.post("/v1/functions/{id}/scale_down")
async def scale_down(request: web.Request) -> web.Response:
    body = parse(ScaleBody, await read_json(request, default={}))
    return await _scale(request, -body.count)


@routes.post("/v1/functions/{id}/detach")
async def detach(request: web.Request) -> web.Response:
    """Release every provisioned container of the function (a body, if any, is ignored)."""
    return await _scale(request, None)
