"""Function versions: immutable snapshots, numbered per function by a counter never reused."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Row, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from spinlet.domain import Function, FunctionStatus, FunctionVersion, Package
from spinlet.errors import Conflict, Forbidden, FunctionNotReady, NotFound
from spinlet.store.database import Database
from spinlet.store.locks import lock_function
from spinlet.store.tables import aliases, function_versions, functions, packages

_COLUMNS = [*function_versions.c, packages.c.md5sum, packages.c.size]


def _version(row: Row[Any]) -> FunctionVersion:
    return FunctionVersion(
        id=row.id,
        function_id=row.function_id,
        number=row.version_number,
        package=Package(sha256=row.package_sha256, md5sum=row.md5sum, size=row.size),
        entry=row.entry,
        runtime_id=row.runtime_id,
        image_id=row.image_id,
        timeout=row.timeout,
        memory_size=row.memory_size,
        cpu=row.cpu,
        environment=dict(row.environment or {}),
        network=row.network,
        config_hash=row.config_hash,
        description=row.description,
        layer_id=row.layer_id,
        dependencies=tuple(row.dependencies or ()),
        project_id=row.project_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _select(project_id: Any, function_id: Any) -> Any:
    return (
        select(*_COLUMNS)
        .join(packages, packages.c.sha256 == function_versions.c.package_sha256)
        .where(function_versions.c.project_id == project_id)
        .where(function_versions.c.function_id == function_id)
    )


# Every execution of a version looks it up: the statement is built once.
_FIND = _select(bindparam("project_id"), bindparam("function_id")).where(
    function_versions.c.version_number == bindparam("number")
)


async def alias_names(
    conn: AsyncConnection, project_id: str, function_id: str, *numbers: int
) -> list[str]:
    """The aliases of a function (only those using one of `numbers`, when given)."""
    query = (
        select(aliases.c.name)
        .where(aliases.c.project_id == project_id)
        .where(aliases.c.function_id == function_id)
        .order_by(aliases.c.name)
    )
    if numbers:
        query = query.where(
            or_(aliases.c.function_version.in_(numbers), aliases.c.routing_version.in_(numbers))
        )
    return list((await conn.execute(query)).scalars())


class _Unchanged(Exception):
    def __init__(self, version: FunctionVersion) -> None:
        self.version = version


class VersionRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def publish(self, snapshot: FunctionVersion) -> tuple[FunctionVersion, bool]:
        """Store `snapshot` as its function's next version; True when it is new.

        When the latest version has the same `config_hash`, that version is returned instead
        (False). `snapshot` was taken from the function as read before: if the function's code or
        configuration changed since, this raises `Conflict` (publish again); while it is not
        `available` (its dependencies are building, or failed), `FunctionNotReady`.
        """
        try:
            async with self.db.transaction() as conn:
                number = await self._next_number(conn, snapshot)
                query = _select(snapshot.project_id, snapshot.function_id)
                latest = (
                    await conn.execute(
                        query.order_by(function_versions.c.version_number.desc()).limit(1)
                    )
                ).first()
                if latest is not None and latest.config_hash == snapshot.config_hash:
                    raise _Unchanged(_version(latest))  # rolls the counter back
                version = dataclasses.replace(snapshot, number=number)
                await conn.execute(
                    function_versions.insert().values(
                        id=version.id,
                        project_id=version.project_id,
                        function_id=version.function_id,
                        version_number=version.number,
                        description=version.description,
                        runtime_id=version.runtime_id,
                        image_id=version.image_id,
                        entry=version.entry,
                        package_sha256=version.package.sha256,
                        timeout=version.timeout,
                        memory_size=version.memory_size,
                        cpu=version.cpu,
                        environment=version.environment,
                        network=version.network,
                        config_hash=version.config_hash,
                        layer_id=version.layer_id,
                        dependencies=list(version.dependencies) if version.layer_id else None,
                        created_at=version.created_at,
                        updated_at=version.updated_at,
                    )
                )
        except _Unchanged as unchanged:
            return unchanged.version, False
        return version, True

    @staticmethod
    async def _next_number(conn: AsyncConnection, snapshot: FunctionVersion) -> int:
        """Count up the function's counter, if it still is as `snapshot` shows it (locks it)."""
        fn = functions.c
        bumped = await conn.execute(
            update(functions)
            .where(fn.id == snapshot.function_id)
            .where(fn.project_id == snapshot.project_id)
            .where(fn.package_sha256 == snapshot.package.sha256)
            .where(fn.entry == snapshot.entry)
            .where(fn.runtime_id == snapshot.runtime_id)
            .where(fn.timeout == snapshot.timeout)
            .where(fn.memory_size == snapshot.memory_size)
            .where(fn.cpu == snapshot.cpu)
            .where(fn.network == snapshot.network)
            .where(fn.layer_id.is_not_distinct_from(snapshot.layer_id))
            .where(fn.status == FunctionStatus.AVAILABLE.value)
            .values(latest_version=fn.latest_version + 1)
        )
        if not bumped.rowcount:
            if not await lock_function(conn, snapshot.project_id, snapshot.function_id):
                raise NotFound(f"function {snapshot.function_id!r} not found")
            query = select(fn.status).where(fn.id == snapshot.function_id)
            status = FunctionStatus.read((await conn.execute(query)).scalar_one())
            if status is not FunctionStatus.AVAILABLE:
                raise FunctionNotReady(
                    f"the function is {status.value}: publish once its dependencies are built",
                    status=status.value,
                )
            raise Conflict("the function changed while a version was being published; try again")
        query = select(fn.latest_version).where(fn.id == snapshot.function_id)
        number: int = (await conn.execute(query)).scalar_one()
        return number

    async def find(self, project_id: str, function_id: str, number: int) -> FunctionVersion | None:
        params = {"project_id": project_id, "function_id": function_id, "number": number}
        row = await self.db.read(lambda conn: conn.execute(_FIND, params).first())
        return _version(row) if row else None

    async def list(self, project_id: str, function_id: str) -> list[FunctionVersion]:
        query = _select(project_id, function_id).order_by(function_versions.c.version_number)
        async with self.db.connect() as conn:
            return [_version(row) for row in await conn.execute(query)]

    async def unused_images(self, image_ids: set[str]) -> set[str]:
        """Those of `image_ids` that no version of any project runs on."""
        if not image_ids:
            return set()
        async with self.db.connect() as conn:
            return await _unused(conn, image_ids)

    async def delete(self, function: Function, number: int) -> FunctionVersion:
        """Delete a version; refused (`Forbidden`, naming them) while aliases use it."""
        async with self.db.transaction() as conn:
            if not await lock_function(conn, function.project_id, function.id):
                raise NotFound(f"function {function.name!r} not found")
            query = _select(function.project_id, function.id).where(
                function_versions.c.version_number == number
            )
            row = (await conn.execute(query)).first()
            if row is None:
                raise NotFound(f"version {number} of function {function.name!r} not found")
            names = await alias_names(conn, function.project_id, function.id, number)
            if names:
                raise Forbidden(
                    f"version {number} of function {function.name!r} is used by "
                    f"{aliases_phrase(names)}",
                    aliases=names,
                )
            await conn.execute(delete(function_versions).where(function_versions.c.id == row.id))
        return _version(row)


async def _unused(conn: AsyncConnection, image_ids: set[str]) -> set[str]:
    used = await conn.execute(
        select(function_versions.c.image_id)
        .where(function_versions.c.image_id.in_(image_ids))
        .distinct()
    )
    return image_ids - set(used.scalars())


def aliases_phrase(names: list[str]) -> str:
    """`alias 'a'; re-point or delete it first` (or the plural)."""
    quoted = ", ".join(repr(name) for name in names)
    if len(names) == 1:
        return f"alias {quoted}; re-point or delete it first"
    return f"aliases {quoted}; re-point or delete them first"
