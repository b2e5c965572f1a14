"""/v1/functions/{id}/versions"""

from __future__ import annotations

from aiohttp import web

from spinlet.api.bodies import read_json
from spinlet.api.filters import whole_number
from spinlet.api.keys import project_of, services
from spinlet.api.schemas import VersionCreate, parse
from spinlet.api.serialize import VersionList, VersionRecord, respond

routes = web.RouteTableDef()


def _number(request: web.Request) -> int:
    return whole_number(request.match_info["number"], "the version (0: the current code)")


@routes.post("/v1/functions/{id}/versions")
async def publish_version(request: web.Request) -> web.Response:
    """201 with a new version, or 200 with the latest one when nothing changed since."""
    body = parse(VersionCreate, await read_json(request, default={}))
    version, created = await services(request).versions.publish(
        project_of(request), request.match_info["id"], body.description
    )
    return respond(VersionRecord.model_validate(version), status=201 if created else 200)


@routes.get("/v1/functions/{id}/versions")
async def list_versions(request: web.Request) -> web.Response:
    versions = await services(request).versions.list(project_of(request), request.match_info["id"])
    return respond(VersionList(function_versions=versions))


@routes.get("/v1/functions/{id}/versions/{number}")
async def get_version(request: web.Request) -> web.StreamResponse:
    service = services(request).versions
    ref, number = request.match_info["id"], _number(request)
    if request.query.get("download", "").lower() in ("1", "true", "yes"):
        function, data = await service.download(project_of(request), ref, number)
        return web.Response(
            body=data,
            content_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="{function.name}-v{number}.zip"'
            },
        )
    version = await service.get(project_of(request), ref, number)
    return respond(VersionRecord.model_validate(version))


@routes.delete("/v1/functions/{id}/versions/{number}")
async def delete_version(request: web.Request) -> web.Response:
    await services(request).versions.delete(
        project_of(request), request.match_info["id"], _number(request)
    )
    return web.Response(status=204)
