"""Domain records as API JSON (Qinling v1 field names)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from spinlet.domain import Alias, ApiToken, Execution, Function, FunctionVersion, Runtime


def timestamp(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def runtime(rt: Runtime) -> dict[str, Any]:
    return {
        "id": rt.id,
        "name": rt.name,
        "image": rt.image,
        "description": rt.description,
        "status": rt.status.value,
        "is_public": rt.is_public,
        "trusted": rt.trusted,
        "project_id": rt.project_id,
        "created_at": timestamp(rt.created_at),
        "updated_at": timestamp(rt.updated_at),
    }


def function(fn: Function) -> dict[str, Any]:
    return {
        "id": fn.id,
        "name": fn.name,
        "description": fn.description,
        "runtime_id": fn.runtime_id,
        "code": fn.code,
        "entry": fn.entry,
        "count": 0,
        "cpu": fn.cpu,
        "retries": fn.retries,
        "concurrency": fn.concurrency,
        "environment_keys": sorted(fn.environment),  # the values are never shown
        "network": fn.network,
        "memory_size": fn.memory_size,
        "timeout": fn.timeout,
        "status": fn.status.value,
        "package_size": fn.package.size,
        "latest_version": fn.latest_version,
        "project_id": fn.project_id,
        "created_at": timestamp(fn.created_at),
        "updated_at": timestamp(fn.updated_at),
    }


def execution(ex: Execution, *, include_output: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ex.id,
        "function_id": ex.function_id,
        "function_name": ex.function_name,
        "function_version": ex.function_version,
        "function_alias": ex.function_alias,
        "status": ex.status.value,
        "status_reason": ex.status_reason,
        "sync": ex.sync,
        "input": ex.input,
        "result": ex.result if include_output else None,
        "error": ex.error.as_json() if ex.error else None,
        "duration_ms": ex.duration_ms,
        "start_kind": ex.start_kind,
        "init_ms": ex.init_ms,
        "image_id": ex.image_id,
        "source": ex.source.value,
        "description": ex.description,
        "expired": ex.expired,
        "attempts": ex.attempts,
        "node_id": ex.node_id,  # the node that ran (or runs) it
        "project_id": ex.project_id,
        "created_at": timestamp(ex.created_at),
        "started_at": timestamp(ex.started_at),
        "finished_at": timestamp(ex.finished_at),
        "updated_at": timestamp(ex.updated_at),
    }
    if not include_output:
        del body["result"]
    return body


def version(v: FunctionVersion) -> dict[str, Any]:
    return {
        "id": v.id,
        "function_id": v.function_id,
        "version_number": v.number,
        "description": v.description,
        "count": 0,
        "code": v.code,
        "entry": v.entry,
        "runtime_id": v.runtime_id,
        "image_id": v.image_id,
        "package_size": v.package.size,
        "timeout": v.timeout,
        "memory_size": v.memory_size,
        "cpu": v.cpu,
        "environment_keys": sorted(v.environment),
        "network": v.network,
        "config_hash": v.config_hash,
        "project_id": v.project_id,
        "created_at": timestamp(v.created_at),
        "updated_at": timestamp(v.updated_at),
    }


def alias(a: Alias) -> dict[str, Any]:
    routing = None
    if a.routing is not None:
        routing = {"version": a.routing.version, "weight": a.routing.weight}
    return {
        "id": a.id,
        "name": a.name,
        "function_id": a.function_id,
        "function_version": a.function_version,
        "routing": routing,
        "description": a.description,
        "project_id": a.project_id,
        "created_at": timestamp(a.created_at),
        "updated_at": timestamp(a.updated_at),
    }


def token(t: ApiToken) -> dict[str, Any]:
    """A token's record: never its secret, which only the answer to its creation holds."""
    return {
        "id": t.id,
        "project_id": t.project_id,
        "role": t.role.value,
        "name": t.name,
        "prefix": t.prefix,
        "created_at": timestamp(t.created_at),
        "revoked_at": timestamp(t.revoked_at),
    }
