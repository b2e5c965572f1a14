"""/v1/jobs (Qinling's cron jobs)"""

from __future__ import annotations

from aiohttp import web

from spinlet.api.bodies import read_json
from spinlet.api.keys import listing_project, project_of, services
from spinlet.api.schemas import JobBody, parse
from spinlet.api.serialize import JobList, JobRecord, respond
from spinlet.domain import JobStatus
from spinlet.services.jobs import JobFields

routes = web.RouteTableDef()


async def _fields(request: web.Request) -> JobFields:
    body = parse(JobBody, await read_json(request, default={}))
    return JobFields(
        name=body.name,
        function=body.function_id,
        alias=body.function_alias,
        version=body.function_version,
        function_input=body.function_input,
        pattern=body.pattern,
        timezone=body.timezone,
        first_execution_time=body.first_execution_time,
        next_execution_time=body.next_execution_time,
        count=body.count,
        status=None if body.status is None else JobStatus(body.status),
    )


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    job = await services(request).jobs.create(project_of(request), await _fields(request))
    return respond(JobRecord.model_validate(job), status=201)


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    jobs = await services(request).jobs.list(listing_project(request))
    return respond(JobList(jobs=jobs))


@routes.get("/v1/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    job = await services(request).jobs.get(project_of(request), request.match_info["id"])
    return respond(JobRecord.model_validate(job))


@routes.put("/v1/jobs/{id}")
async def update_job(request: web.Request) -> web.Response:
    """Null (or absent) fields stay as they are, as the Qinling client expects: `status`
    pauses, resumes or cancels it."""
    job = await services(request).jobs.update(
        project_of(request), request.match_info["id"], await _fields(request)
    )
    return respond(JobRecord.model_validate(job))


@routes.delete("/v1/jobs/{id}")
async def delete_job(request: web.Request) -> web.Response:
    await services(request).jobs.delete(project_of(request), request.match_info["id"])
    return web.Response(status=204)
