"""Aliases: names (unique per project) for a function at a version, with an optional canary."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from spinlet.domain import Alias, Routing
from spinlet.errors import NotFound
from spinlet.store.database import Database
from spinlet.store.errors import unique
from spinlet.store.locks import lock_function
from spinlet.store.tables import aliases, function_versions


def _alias(row: Row[Any]) -> Alias:
    routing = None
    if row.routing_version is not None and row.routing_weight is not None:
        routing = Routing(version=row.routing_version, weight=row.routing_weight)
    return Alias(
        id=row.id,
        name=row.name,
        function_id=row.function_id,
        function_version=row.function_version,
        routing=routing,
        description=row.description,
        project_id=row.project_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _values(alias: Alias) -> dict[str, Any]:
    return {
        "name": alias.name,
        "function_id": alias.function_id,
        "function_version": alias.function_version,
        "routing_version": alias.routing.version if alias.routing else None,
        "routing_weight": alias.routing.weight if alias.routing else None,
        "description": alias.description,
        "updated_at": alias.updated_at,
    }


async def _check_target(conn: AsyncConnection, alias: Alias) -> None:
    """The function and the versions the alias points at exist (and stay, until commit)."""
    if not await lock_function(conn, alias.project_id, alias.function_id):
        raise NotFound(f"function {alias.function_id!r} not found")
    numbers = {alias.function_version, alias.routing.version if alias.routing else 0} - {0}
    for number in sorted(numbers):
        query = (
            select(function_versions.c.id)
            .where(function_versions.c.function_id == alias.function_id)
            .where(function_versions.c.version_number == number)
        )
        if (await conn.execute(query)).first() is None:
            raise NotFound(f"version {number} of function {alias.function_id!r} not found")


class AliasRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, alias: Alias) -> Alias:
        async with unique("alias", alias.name), self.db.transaction() as conn:
            await _check_target(conn, alias)
            await conn.execute(
                aliases.insert().values(
                    id=alias.id,
                    project_id=alias.project_id,
                    created_at=alias.created_at,
                    **_values(alias),
                )
            )
        return alias

    async def update(self, alias: Alias) -> Alias:
        async with self.db.transaction() as conn:
            await _check_target(conn, alias)
            done = await conn.execute(
                update(aliases)
                .where(aliases.c.id == alias.id)
                .where(aliases.c.project_id == alias.project_id)
                .values(**_values(alias))
            )
            if not done.rowcount:
                raise NotFound(f"alias {alias.name!r} not found")
        return alias

    async def find(self, project_id: str, name: str) -> Alias | None:
        query = (
            select(aliases).where(aliases.c.project_id == project_id).where(aliases.c.name == name)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return _alias(row) if row else None

    async def get(self, project_id: str, name: str) -> Alias:
        alias = await self.find(project_id, name)
        if alias is None:
            raise NotFound(f"alias {name!r} not found")
        return alias

    async def list(self, project_id: str | None, function_id: str | None = None) -> list[Alias]:
        """The project's aliases (None: every project's), perhaps only one function's."""
        query = select(aliases)
        if project_id is not None:
            query = query.where(aliases.c.project_id == project_id)
        if function_id is not None:
            query = query.where(aliases.c.function_id == function_id)
        async with self.db.connect() as conn:
            rows = await conn.execute(query.order_by(aliases.c.name))
            return [_alias(row) for row in rows]

    async def delete(self, project_id: str, name: str) -> None:
        async with self.db.transaction() as conn:
            done = await conn.execute(
                delete(aliases)
                .where(aliases.c.project_id == project_id)
                .where(aliases.c.name == name)
            )
        if not done.rowcount:
            raise NotFound(f"alias {name!r} not found")
