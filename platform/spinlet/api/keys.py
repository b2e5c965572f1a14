"""Typed application state."""

from __future__ import annotations

from aiohttp import web

from spinlet.api.filters import flag
from spinlet.domain import Principal
from spinlet.errors import Forbidden
from spinlet.node import Services
from spinlet.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
PRINCIPAL = web.RequestKey("principal", Principal)


def route_path(request: web.Request) -> str:
    """The path of the route a request matched, as declared (`/v1/webhooks/{id}/invoke`), or
    the request's own path when it matched none."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def project_of(request: web.Request) -> str:
    """The project a request acts for: every store call is scoped to it."""
    return request[PRINCIPAL].project_id


def listing_project(request: web.Request) -> str | None:
    """The project a listing shows: the request's, or all of them with `all_projects=true`
    (admins only)."""
    if flag(request.query, "all_projects", False):
        require_admin(request, "listing every project's objects (all_projects)")
        return None
    return project_of(request)


def require_admin(request: web.Request, what: str) -> None:
    if not request[PRINCIPAL].is_admin:
        raise Forbidden(f"{what} needs an admin token")
