"""Aliases: a stable name for a function at a version, re-pointed to release or roll back, with
an optional weighted second version (a canary)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from spinlet.domain import Alias, Function, Routing, utcnow
from spinlet.errors import NotFound, ValidationFailed
from spinlet.services.runtimes import check_name
from spinlet.store import Store


@dataclass(frozen=True)
class AliasFields:
    """What a create or update sets; None means "not given" (unchanged on update).

    `routing` sets a canary; `clear_routing` removes it.
    """

    name: str | None = None
    function: str | None = None  # id or name
    version: int | None = None
    description: str | None = None
    routing: Routing | None = None
    clear_routing: bool = False


def check_routing(routing: Routing | None, version: int) -> None:
    if routing is None:
        return
    if not 0 < routing.weight < 1:
        raise ValidationFailed(
            f"routing weight must be strictly between 0 and 1 (a share), not {routing.weight:g}"
        )
    if routing.version < 0:
        raise ValidationFailed("routing version must be 0 (current code) or a published version")
    if routing.version == version:
        raise ValidationFailed(
            f"routing version {routing.version} is the alias's own version; a canary needs "
            "another version"
        )


class AliasService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _check_versions(self, function: Function, alias: Alias) -> None:
        """404 for a version the alias would point at that does not exist (0 always does)."""
        numbers = {alias.function_version, alias.routing.version if alias.routing else 0}
        for number in sorted(numbers - {0}):
            if await self.store.versions.find(function.project_id, function.id, number) is None:
                raise NotFound(f"version {number} of function {function.name!r} not found")

    async def create(self, project_id: str, fields: AliasFields) -> Alias:
        if not fields.name:
            raise ValidationFailed("name is required")
        if not fields.function:
            raise ValidationFailed("function_id is required")
        check_name("alias", fields.name)
        version = fields.version or 0
        if version < 0:
            raise ValidationFailed("function_version must be 0 (current code) or more")
        routing = None if fields.clear_routing else fields.routing
        check_routing(routing, version)
        function = await self.store.functions.get(project_id, fields.function)
        alias = Alias(
            id=str(uuid.uuid4()),
            name=fields.name,
            function_id=function.id,
            function_version=version,
            routing=routing,
            description=fields.description,
            project_id=project_id,
        )
        await self._check_versions(function, alias)
        return await self.store.aliases.create(alias)

    async def get(self, project_id: str, name: str) -> Alias:
        return await self.store.aliases.get(project_id, name)

    async def list(self, project_id: str | None, function: str | None = None) -> list[Alias]:
        """The project's aliases (None: every project's, and `function` is then an id)."""
        function_id = function
        if function is not None and project_id is not None:
            function_id = (await self.store.functions.get(project_id, function)).id
        return await self.store.aliases.list(project_id, function_id)

    async def update(self, project_id: str, name: str, fields: AliasFields) -> Alias:
        """Change what is given. Pointing the alias at its canary's version ends the canary."""
        alias = await self.store.aliases.get(project_id, name)
        if fields.name is not None and fields.name != alias.name:
            raise ValidationFailed("an alias cannot be renamed; create a new one")
        ref = fields.function if fields.function is not None else alias.function_id
        function = await self.store.functions.get(project_id, ref)
        version = alias.function_version if fields.version is None else fields.version
        if version < 0:
            raise ValidationFailed("function_version must be 0 (current code) or more")
        routing = alias.routing
        if fields.clear_routing:
            routing = None
        elif fields.routing is not None:
            routing = fields.routing
        elif routing is not None and routing.version == version:
            routing = None  # the canary was promoted
        check_routing(routing, version)
        changed = alias.evolve(
            function_id=function.id,
            function_version=version,
            routing=routing,
            description=alias.description if fields.description is None else fields.description,
            updated_at=utcnow(),
        )
        await self._check_versions(function, changed)
        return await self.store.aliases.update(changed)

    async def delete(self, project_id: str, name: str) -> None:
        await self.store.aliases.delete(project_id, name)
