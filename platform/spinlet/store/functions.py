"""Functions and the packages (code blobs) they reference.

A function with requirements names its build (`build_key`); its status, layer and status
message follow that build's, written from the build's row in the same transaction as the
function (`_settled`), so a build that finishes meanwhile is never missed. The status changes
only as `domain.FUNCTION_TRANSITIONS` allows (`_settling`), never from a status this node does
not know.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    BindParameter,
    Row,
    Select,
    Update,
    bindparam,
    delete,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from spinlet.domain import (
    FUNCTION_TRANSITIONS,
    Function,
    FunctionStatus,
    Package,
    transition,
    utcnow,
)
from spinlet.errors import Forbidden, NotFound
from spinlet.store.database import Database
from spinlet.store.errors import unique
from spinlet.store.layers import ensure_build
from spinlet.store.locks import lock_function
from spinlet.store.tables import function_versions, functions, layers, packages, runtimes
from spinlet.store.versions import alias_names, aliases_phrase
from spinlet.store.webhooks import webhook_ids

_COLUMNS = [
    *functions.c,
    packages.c.md5sum,
    packages.c.size,
    layers.c.dependencies.label("layer_dependencies"),
]


def _select() -> Select[Any]:
    """Functions with their package and the pins of their layer (when they have one)."""
    return (
        select(*_COLUMNS)
        .join(packages, packages.c.sha256 == functions.c.package_sha256)
        .outerjoin(layers, layers.c.id == functions.c.layer_id)
    )


# Every execution looks its function up: the statement is built once.
_REF: BindParameter[str] = bindparam("ref")
_FIND = (
    _select()
    .where(functions.c.project_id == bindparam("project_id"))
    .where(or_(functions.c.id == _REF, functions.c.name == _REF))
    .order_by((functions.c.id == _REF).desc())
    .limit(1)
)
# The same, with the image of the function's runtime: what a version-0 execution needs, in one read.
_FIND_WITH_IMAGE: Any = _FIND.add_columns(runtimes.c.image.label("runtime_image")).join(
    runtimes, runtimes.c.id == functions.c.runtime_id
)


def _function(row: Row[Any]) -> Function:
    return Function(
        id=row.id,
        name=row.name,
        runtime_id=row.runtime_id,
        package=Package(sha256=row.package_sha256, md5sum=row.md5sum, size=row.size),
        entry=row.entry,
        description=row.description,
        timeout=row.timeout,
        memory_size=row.memory_size,
        cpu=row.cpu,
        retries=row.retries,
        concurrency=row.concurrency,
        environment=dict(row.environment or {}),
        network=row.network,
        status=FunctionStatus.read(row.status),
        latest_version=row.latest_version,
        requirements=row.requirements,
        build_key=row.build_key,
        layer_id=row.layer_id,
        status_message=row.status_message,
        dependencies=tuple(row.layer_dependencies or ()),
        project_id=row.project_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _values(function: Function) -> dict[str, Any]:
    """The columns of a function but its status, layer and status message (`_settled`)."""
    return {
        "name": function.name,
        "description": function.description,
        "runtime_id": function.runtime_id,
        "entry": function.entry,
        "package_sha256": function.package.sha256,
        "timeout": function.timeout,
        "memory_size": function.memory_size,
        "cpu": function.cpu,
        "retries": function.retries,
        "concurrency": function.concurrency,
        "environment": function.environment,
        "network": function.network,
        "requirements": function.requirements,
        "build_key": function.build_key,
        "updated_at": function.updated_at,
    }


async def _settled(conn: AsyncConnection, function: Function) -> dict[str, Any]:
    """The status, layer and status message `function` has: its build's, read (and locked,
    made when missing) in this transaction; with no requirements, `available` with no layer.
    Empty for a status this node does not know (it stays as stored)."""
    if function.build_key is None:  # no requirements: nothing to build
        status, layer_id, message = FunctionStatus.AVAILABLE, None, None
        if function.status is FunctionStatus.UNKNOWN:
            return {}
    else:
        requirements = function.requirements or ""
        build = await conn.run_sync(
            ensure_build, function.build_key, function.runtime_id, requirements
        )
        status, layer_id, message = FunctionStatus.read(build.status), function.layer_id, None
        if status is FunctionStatus.AVAILABLE:
            layer_id = build.layer_id
        elif status is FunctionStatus.ERROR:
            message = build.message
    if status is FunctionStatus.UNKNOWN:
        return {}
    return {"status": status.value, "layer_id": layer_id, "status_message": message}


@functools.cache
def _settling(target: FunctionStatus) -> Update:
    """Writing the status a function settles on: from every status the table lets move to it,
    or staying in it; never from a status this node does not know."""
    change = transition(
        [status for status, allowed in FUNCTION_TRANSITIONS.items() if target in allowed], target
    )
    return (
        update(functions)
        .where(functions.c.status.in_([*change.source_values, target.value]))
        .values(status=target.value)
    )


async def _read(conn: AsyncConnection, function: Function) -> Function:
    """`function` as just written (NotFound when it is not there)."""
    params = {"project_id": function.project_id, "ref": function.id}
    row = (await conn.execute(_FIND, params)).first()
    if row is None:
        raise NotFound(f"function {function.name!r} not found")
    return _function(row)


async def _ensure_package(conn: AsyncConnection, package: Package) -> None:
    known = await conn.execute(select(packages.c.sha256).where(packages.c.sha256 == package.sha256))
    if known.first() is None:
        await conn.execute(
            packages.insert().values(
                sha256=package.sha256,
                md5sum=package.md5sum,
                size=package.size,
                created_at=utcnow(),
            )
        )


class FunctionRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, function: Function) -> Function:
        """Store a new function; its status is its build's (see the module's docstring)."""
        async with unique("function", function.name), self.db.transaction() as conn:
            await _ensure_package(conn, function.package)
            await conn.execute(
                functions.insert().values(
                    id=function.id,
                    project_id=function.project_id,
                    created_at=function.created_at,
                    **_values(function),
                    **(await _settled(conn, function) or {"status": function.status.value}),
                )
            )
            return await _read(conn, function)

    async def find(self, project_id: str, ref: str) -> Function | None:
        """A function of the project, by id or by name."""
        params = {"project_id": project_id, "ref": ref}
        row = await self.db.read(lambda conn: conn.execute(_FIND, params).first())
        return _function(row) if row else None

    async def find_with_image(self, project_id: str, ref: str) -> tuple[Function, str] | None:
        """A function of the project (by id or name) and the image its runtime names."""
        params = {"project_id": project_id, "ref": ref}
        row = await self.db.read(lambda conn: conn.execute(_FIND_WITH_IMAGE, params).first())
        return (_function(row), row.runtime_image) if row else None

    async def get(self, project_id: str, ref: str) -> Function:
        function = await self.find(project_id, ref)
        if function is None:
            raise NotFound(f"function {ref!r} not found")
        return function

    async def list(self, project_id: str | None) -> list[Function]:
        """The project's functions (None: every project's)."""
        query = _select().order_by(functions.c.created_at, functions.c.id)
        if project_id is not None:
            query = query.where(functions.c.project_id == project_id)
        async with self.db.connect() as conn:
            return [_function(row) for row in await conn.execute(query)]

    async def update(self, function: Function) -> Function:
        """Write a function's code and configuration; its status is its build's (see the
        module's docstring), whatever `function` says."""
        function = function.evolve(updated_at=utcnow())
        async with unique("function", function.name), self.db.transaction() as conn:
            await _ensure_package(conn, function.package)
            # The build's row first, as finishing a build locks it before its functions.
            settled = await _settled(conn, function)
            mine = (functions.c.id == function.id, functions.c.project_id == function.project_id)
            await conn.execute(update(functions).where(*mine).values(**_values(function)))
            if settled:
                target = FunctionStatus(settled.pop("status"))
                await conn.execute(_settling(target).where(*mine).values(**settled))
            return await _read(conn, function)

    async def delete(self, function: Function) -> tuple[set[str], set[str]]:
        """Delete a function and its versions; returns the package hashes they used and the
        image ids of the versions.

        Refused (`Forbidden`, naming them) while aliases or webhooks point at the function.
        """
        async with self.db.transaction() as conn:
            if not await lock_function(conn, function.project_id, function.id):
                raise NotFound(f"function {function.name!r} not found")
            names = await alias_names(conn, function.project_id, function.id)
            if names:
                raise Forbidden(
                    f"function {function.name!r} is used by {aliases_phrase(names)}",
                    aliases=names,
                )
            hooks = await webhook_ids(conn, function.project_id, function.id)
            if hooks:
                raise Forbidden(
                    f"function {function.name!r} is used by {len(hooks)} webhook(s); delete "
                    "them first",
                    webhooks=hooks,
                )
            versions = function_versions.c
            used = (
                await conn.execute(
                    select(versions.package_sha256, versions.image_id).where(
                        versions.function_id == function.id
                    )
                )
            ).all()
            hashes = {function.package.sha256, *(row.package_sha256 for row in used)}
            images = {row.image_id for row in used}
            await conn.execute(delete(function_versions).where(versions.function_id == function.id))
            await conn.execute(
                delete(functions)
                .where(functions.c.id == function.id)
                .where(functions.c.project_id == function.project_id)
            )
        return hashes, images

    async def drop_package_if_unused(self, sha256: str) -> bool:
        """Forget a package no function or version references any more; True when dropped."""
        try:
            async with self.db.transaction() as conn:
                for table in (functions, function_versions):
                    query = select(exists().where(table.c.package_sha256 == sha256))
                    if (await conn.execute(query)).scalar():
                        return False
                result = await conn.execute(delete(packages).where(packages.c.sha256 == sha256))
                return bool(result.rowcount)
        except IntegrityError:  # referenced again meanwhile (the foreign keys said no)
            return False
