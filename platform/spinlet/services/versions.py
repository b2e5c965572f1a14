"""Versions: publishing immutable snapshots of a function, reading and deleting them.

A version freezes the function's package, its configuration and the id of the runtime image it
runs on, so that neither a later update of the function nor a rebuilt runtime image changes what
the version runs. Version 0 is not stored: it always means the function's current code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from typing import Any

from spinlet.domain import Function, FunctionStatus, FunctionVersion
from spinlet.errors import Forbidden, FunctionNotReady, ImageNotFound, NotFound
from spinlet.packages import PackageStore
from spinlet.runtime.backend import RuntimeBackend
from spinlet.services.packages import forget_package
from spinlet.services.runtime_builds import RuntimeBuilds
from spinlet.store import Store


def config_hash(function: Function, image_id: str) -> str:
    """One hash over code and configuration: publishing is a no-op while it stays the same.

    A field added later (environment variables, …) enters the material only when it is set, so
    that the hashes of existing versions stay valid and an upgrade publishes nothing new.
    """
    material: dict[str, Any] = {
        "package_sha256": function.package.sha256,
        "entry": function.entry,
        "runtime_id": function.runtime_id,
        "image_id": image_id,
        "timeout": function.timeout,
        "memory_size": function.memory_size,
        "cpu": function.cpu,
    }
    if function.environment:
        material["environment"] = function.environment
    if function.network:
        material["network"] = True
    if function.layer_id is not None:  # the exact resolved set, not the requirements asked
        material["layer_id"] = function.layer_id
        material["dependencies"] = list(function.dependencies)
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def snapshot(
    function: Function, image_id: str, *, description: str | None = None
) -> FunctionVersion:
    """The function as it is now, as a version (numbered by the store when published)."""
    return FunctionVersion(
        id=str(uuid.uuid4()),
        function_id=function.id,
        number=0,
        package=function.package,
        entry=function.entry,
        runtime_id=function.runtime_id,
        image_id=image_id,
        timeout=function.timeout,
        memory_size=function.memory_size,
        cpu=function.cpu,
        environment=dict(function.environment),
        network=function.network,
        layer_id=function.layer_id,
        dependencies=function.dependencies,
        config_hash=config_hash(function, image_id),
        description=description,
        project_id=function.project_id,
    )


class VersionService:
    def __init__(
        self,
        store: Store,
        package_store: PackageStore,
        backend: RuntimeBackend,
        *,
        builds: RuntimeBuilds,
    ) -> None:
        self.store = store
        self.package_store = package_store
        self.backend = backend
        self.builds = builds

    async def _image_id(self, function: Function) -> str:
        """The id of the image the function's runtime names now (it must be present)."""
        runtime = await self.store.runtimes.get(function.project_id, function.runtime_id)
        image_id = await self.backend.image_id(runtime.image)
        if image_id is None:
            self.builds.forget(runtime.image)
            await self.builds.check_ready(runtime.image)  # a shipped runtime: 409, building
            raise ImageNotFound(
                f"the image {runtime.image!r} of runtime {runtime.name!r} is not present on this "
                "node: a version needs it (build it with `spinlet runtimes build`)"
            )
        return image_id

    async def publish(
        self, project_id: str, ref: str, description: str | None = None
    ) -> tuple[FunctionVersion, bool]:
        """Publish the function's current code and config; False when the latest version
        already is exactly that (it is returned instead of a duplicate)."""
        function = await self.store.functions.get(project_id, ref)
        if function.status is not FunctionStatus.AVAILABLE:
            why = (
                "its dependencies are still being built: publish once it is available"
                if function.status is FunctionStatus.BUILDING
                else f"its dependencies failed to build: {function.status_message or ''}"
            )
            raise FunctionNotReady(
                f"function {function.name!r} cannot be published: {why}",
                function_status=function.status.value,
            )
        image_id = await self._image_id(function)
        # Kept before it is recorded: a version never names an image that may go.
        await self.backend.keep_image(image_id, True)
        return await self.store.versions.publish(
            snapshot(function, image_id, description=description)
        )

    async def list(self, project_id: str, ref: str) -> list[FunctionVersion]:
        function = await self.store.functions.get(project_id, ref)
        return await self.store.versions.list(project_id, function.id)

    async def get(self, project_id: str, ref: str, number: int) -> FunctionVersion:
        """A published version; 0 is the function's current code (as it would be published)."""
        function = await self.store.functions.get(project_id, ref)
        if number == 0:
            try:
                image = await self._image_id(function)
            except ImageNotFound:  # shown all the same, with the image's name
                image = (await self.store.runtimes.get(project_id, function.runtime_id)).image
            current = snapshot(function, image)
            changed_at = function.updated_at or function.created_at
            return dataclasses.replace(current, id=function.id, created_at=changed_at)
        version = await self.store.versions.find(project_id, function.id, number)
        if version is None:
            raise NotFound(f"version {number} of function {function.name!r} not found")
        return version

    async def download(self, project_id: str, ref: str, number: int) -> tuple[Function, bytes]:
        function = await self.store.functions.get(project_id, ref)
        sha256 = function.package.sha256
        if number != 0:
            version = await self.store.versions.find(project_id, function.id, number)
            if version is None:
                raise NotFound(f"version {number} of function {function.name!r} not found")
            sha256 = version.package.sha256
        return function, await self.package_store.get(sha256)

    async def delete(self, project_id: str, ref: str, number: int) -> None:
        """Delete a version (refused while an alias uses it); its package goes when unused."""
        function = await self.store.functions.get(project_id, ref)
        if number == 0:
            raise Forbidden("version 0 is the function's current code; it cannot be deleted")
        deleted = await self.store.versions.delete(function, number)
        await forget_package(self.store, self.package_store, deleted.package.sha256)
        await release_images(self.store, self.backend, {deleted.image_id})


async def release_images(store: Store, backend: RuntimeBackend, image_ids: set[str]) -> None:
    """Stop keeping the images no version runs on any more."""
    for image_id in sorted(await store.versions.unused_images(image_ids)):
        await backend.keep_image(image_id, False)
