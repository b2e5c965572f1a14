"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from spinlet import __version__
from spinlet.api import (
    aliases,
    executions,
    functions,
    jobs,
    openapi,
    runtimes,
    tokens,
    versions,
    webhooks,
    workers,
)
from spinlet.api.auth import authenticate
from spinlet.api.browsers import SERVED_HOSTS, ServedHosts, refuse_browsers
from spinlet.api.keys import SERVICES, SETTINGS, require_admin
from spinlet.api.middleware import errors, no_nul
from spinlet.api.serialize import Health, Service, respond
from spinlet.metrics import CONTENT_TYPE
from spinlet.node import running_node
from spinlet.runtime.backend import RuntimeBackend
from spinlet.services.runtime_builds import ImageMaker
from spinlet.settings import Settings

routes = web.RouteTableDef()


@routes.get("/")
@routes.get("/v1")
async def root(request: web.Request) -> web.Response:
    return respond(Service(name="spinlet", version=__version__, api="v1"))


@routes.get("/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return respond(Health(status="ok"))


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """Readiness, for load balancers: 503 while the node cannot run executions."""
    await request.app[SERVICES].check_ready(request.app[SETTINGS].runtime_image)
    return respond(Health(status="ready"))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    require_admin(request, "reading the node's metrics")
    body = await request.app[SERVICES].metrics.scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def create_app(
    settings: Settings, *, backend: RuntimeBackend | None = None, images: ImageMaker | None = None
) -> web.Application:
    """A Spinlet application; the store, backend and services open with the app (`backend`
    and `images`: to use instead of those the settings choose)."""
    app = web.Application(
        middlewares=[errors, refuse_browsers, no_nul, authenticate],
        client_max_size=settings.max_request_size,
    )
    app[SETTINGS] = settings
    app[SERVED_HOSTS] = ServedHosts.of(settings)
    for table in (routes, runtimes.routes, functions.routes, executions.routes):
        app.add_routes(table)
    app.add_routes(versions.routes)
    app.add_routes(aliases.routes)
    app.add_routes(tokens.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(workers.routes)
    app.add_routes(jobs.routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with running_node(settings, backend, images) as node:
            app[SERVICES] = node
            yield

    app.cleanup_ctx.append(lifecycle)
    return app
