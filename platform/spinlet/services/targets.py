"""What an execution runs: a function at one version, resolved from id, name or alias."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from spinlet.domain import Alias, FunctionStatus, Package
from spinlet.errors import FunctionNotReady, NotFound, ValidationFailed
from spinlet.runtime.backend import FunctionSpec
from spinlet.store import Store


@dataclass(frozen=True)
class Target:
    """Everything needed to run one function version; version 0 is the current code."""

    function_id: str
    function_name: str
    version: int
    package: Package
    entry: str
    image: str  # image reference or id of the runtime
    timeout: float
    memory_size: int
    cpu: int
    project_id: str
    concurrency: int = 10  # the function's: its executions at once on a node
    environment: dict[str, str] = field(default_factory=dict)
    network: bool = False
    alias: str | None = None
    layer_id: str | None = None  # its dependency layer
    # `building`: version 0 of a function whose layer is being built (it waits for it).
    status: FunctionStatus = FunctionStatus.AVAILABLE

    def spec(self) -> FunctionSpec:
        return FunctionSpec(
            function_id=self.function_id,
            function_name=self.function_name,
            version=self.version,
            package_hash=self.package.sha256,
            image=self.image,
            entry=self.entry,
            memory_size=self.memory_size,
            cpu=self.cpu,
            timeout=self.timeout,
            project_id=self.project_id,
            environment=self.environment,
            network=self.network,
            layer_id=self.layer_id,
        )


class TargetResolver:
    """Turns what an execution asks for (function, version, alias) into the `Target` to run.

    An alias picks the function and the version; with routing, its canary version is chosen
    with probability `weight` (`rng` returns a float in [0, 1); injectable for tests).
    """

    def __init__(self, store: Store, rng: Callable[[], float] = random.random) -> None:
        self.store = store
        self.rng = rng

    async def resolve(
        self, project_id: str, function: str | None, version: int = 0, alias: str | None = None
    ) -> Target:
        """The target of a new execution (an alias picks the function and the version)."""
        if alias is not None:
            return await self._via_alias(project_id, alias, function, version)
        if not function:
            raise ValidationFailed("function_id (or function_alias) is required")
        return await self.target(project_id, function, version)

    async def _via_alias(
        self, project_id: str, name: str, function: str | None, version: int
    ) -> Target:
        alias = await self.store.aliases.get(project_id, name)
        if version:
            raise ValidationFailed(
                "give function_version or function_alias, not both: the alias chooses the version"
            )
        if function:
            given = await self.store.functions.get(project_id, function)
            if given.id != alias.function_id:
                raise ValidationFailed(
                    f"alias {name!r} belongs to another function than {function!r}"
                )
        target = await self.target(project_id, alias.function_id, self.choose(alias))
        return replace(target, alias=alias.name)

    def choose(self, alias: Alias) -> int:
        """The version an execution through `alias` runs: its canary's with probability
        `weight`, else its own."""
        if alias.routing is not None and self.rng() < alias.routing.weight:
            return alias.routing.version
        return alias.function_version

    async def target(self, project_id: str, function_ref: str, version: int) -> Target:
        """A function at a given version: 0 is its code as it is now, others its snapshots.

        Version 0 of a function whose layer failed to build is `FunctionNotReady`; one being
        built is a target in `building` (a version is never published before its layer)."""
        if version == 0:
            found = await self.store.functions.find_with_image(project_id, function_ref)
            if found is None:
                raise NotFound(f"function {function_ref!r} not found")
            function, image = found
            if function.status is FunctionStatus.ERROR:
                raise FunctionNotReady(
                    f"function {function.name!r} cannot run: its dependencies failed to build: "
                    f"{function.status_message or 'no details'} (fix its requirements, or "
                    "`spinlet functions rebuild` once the cause is gone)",
                    function_status=function.status.value,
                )
            return Target(
                function_id=function.id,
                function_name=function.name,
                version=0,
                package=function.package,
                entry=function.entry,
                image=image,
                timeout=function.timeout,
                memory_size=function.memory_size,
                cpu=function.cpu,
                project_id=function.project_id,
                concurrency=function.concurrency,
                environment=function.environment,
                network=function.network,
                layer_id=function.layer_id,
                status=function.status,
            )
        function = await self.store.functions.get(project_id, function_ref)
        snapshot = await self.store.versions.find(project_id, function.id, version)
        if snapshot is None:
            raise NotFound(f"version {version} of function {function.name!r} not found")
        return Target(
            function_id=function.id,
            function_name=function.name,
            version=snapshot.number,
            package=snapshot.package,
            entry=snapshot.entry,
            image=snapshot.image_id,  # as published: a rebuilt runtime image changes nothing
            timeout=snapshot.timeout,
            memory_size=snapshot.memory_size,
            cpu=snapshot.cpu,
            project_id=function.project_id,
            concurrency=function.concurrency,
            environment=snapshot.environment,
            network=snapshot.network,
            layer_id=snapshot.layer_id,
        )
