"""/v1/functions"""

from __future__ import annotations

from aiohttp import web

from spinlet.api.bodies import read_function_body
from spinlet.api.keys import listing_project, project_of, services
from spinlet.api.schemas import FunctionBody, parse
from spinlet.api.serialize import FunctionList, FunctionRecord, respond
from spinlet.errors import ValidationFailed
from spinlet.services.functions import FunctionFields, Upload

routes = web.RouteTableDef()


async def _fields(request: web.Request) -> tuple[FunctionFields, Upload | None]:
    raw, upload = await read_function_body(request)
    body = parse(FunctionBody, raw)
    fields = FunctionFields(
        name=body.name,
        runtime=body.runtime_id or body.runtime,
        entry=body.entry,
        description=body.description,
        timeout=body.timeout,
        memory_size=body.memory_size,
        cpu=body.cpu,
        retries=body.retries,
        concurrency=body.concurrency,
        environment=body.environment,
        environment_add=body.environment_add,
        environment_remove=tuple(body.environment_remove or ()),
        network=body.network,
        requirements=body.requirements,
        md5sum=body.code_md5sum(),
    )
    return fields, upload


@routes.get("/v1/functions")
async def list_functions(request: web.Request) -> web.Response:
    functions = await services(request).functions.list(listing_project(request))
    return respond(FunctionList(functions=functions))


@routes.post("/v1/functions")
async def create_function(request: web.Request) -> web.Response:
    fields, upload = await _fields(request)
    if upload is None:
        raise ValidationFailed("package is required: a .zip or a single .py file")
    function = await services(request).functions.create(project_of(request), fields, upload)
    return respond(FunctionRecord.model_validate(function), status=201)


@routes.get("/v1/functions/{id}")
async def get_function(request: web.Request) -> web.StreamResponse:
    ref = request.match_info["id"]
    if request.query.get("download", "").lower() in ("1", "true", "yes"):
        function, data = await services(request).functions.download(project_of(request), ref)
        return web.Response(
            body=data,
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{function.name}.zip"'},
        )
    function = await services(request).functions.get(project_of(request), ref)
    return respond(FunctionRecord.model_validate(function))


@routes.put("/v1/functions/{id}")
async def update_function(request: web.Request) -> web.Response:
    fields, upload = await _fields(request)
    function = await services(request).functions.update(
        project_of(request), request.match_info["id"], fields, upload
    )
    return respond(FunctionRecord.model_validate(function))


@routes.post("/v1/functions/{id}/rebuild")
async def rebuild_function(request: web.Request) -> web.Response:
    function = await services(request).functions.rebuild(
        project_of(request), request.match_info["id"]
    )
    return respond(FunctionRecord.model_validate(function), status=202)


@routes.delete("/v1/functions/{id}")
async def delete_function(request: web.Request) -> web.Response:
    await services(request).functions.delete(project_of(request), request.match_info["id"])
    return web.Response(status=204)
