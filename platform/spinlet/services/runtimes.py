"""Runtimes: registering the images functions run in."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from spinlet.domain import DEFAULT_PROJECT, Runtime, RuntimeStatus
from spinlet.errors import (
    AlreadyExists,
    Forbidden,
    ImageMissing,
    ImageNotFound,
    InvalidRuntime,
    NotBuildable,
    ValidationFailed,
)
from spinlet.runtime.backend import RuntimeBackend
from spinlet.runtime.catalog import DEFAULT, ShippedRuntime
from spinlet.runtime.conformance import QUICK
from spinlet.services.runtime_builds import RuntimeBuilds
from spinlet.store import Store

BUILTIN_RUNTIME = DEFAULT.name

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise ValidationFailed(
            f"{kind} name {name!r} must start with a letter or digit and use only letters, "
            "digits, '_', '.' and '-' (at most 255 characters)"
        )
    return name


@dataclass(frozen=True)
class PoolState:
    runtime_id: str
    total: int
    available: int


class RuntimeService:
    def __init__(self, store: Store, backend: RuntimeBackend, builds: RuntimeBuilds) -> None:
        self.store = store
        self.backend = backend
        self.builds = builds
        self._conforming: set[str] = set()  # ids of the images that passed the check here
        self._checking = asyncio.Lock()

    async def register_shipped(self) -> list[Runtime]:
        """Register every shipped runtime at start (public, built in); their images and
        descriptions follow this node's catalogue. Nothing is built here."""
        return [await self._register(entry) for entry in self.builds.catalog]

    async def _register(self, entry: ShippedRuntime) -> Runtime:
        existing = await self.store.runtimes.find(DEFAULT_PROJECT, entry.name)
        if existing is not None and not existing.is_public:
            log.warning(
                "runtime %s is an image registered in the default project: the shipped runtime "
                "of that name is not offered (rename the registered one to offer it)",
                entry.name,
            )
            return existing
        if existing is None:
            runtime = Runtime(
                id=str(uuid.uuid4()),
                name=entry.name,
                image=entry.image,
                description=entry.description,
            )
            try:
                return await self.store.runtimes.create(runtime)
            except AlreadyExists:  # another node starting at the same time registered it
                existing = await self.store.runtimes.get(DEFAULT_PROJECT, entry.name)
        if (existing.image, existing.description) != (entry.image, entry.description):
            return await self.store.runtimes.update(
                existing.evolve(image=entry.image, description=entry.description)
            )
        return existing

    async def build(self, project_id: str, ref: str, *, rebuild: bool = False) -> Runtime:
        """Start building a shipped runtime's image on this node (in the background); the
        runtime as it is then (`building`, or `available` when there was nothing to do)."""
        runtime = await self.store.runtimes.get(project_id, ref)
        entry = self.builds.shipped(runtime)
        if entry is None:
            raise NotBuildable(
                f"runtime {runtime.name!r} is an image registered by an admin, not one shipped "
                "with Spinlet: build or load its image on each node yourself"
            )
        if rebuild or await self.builds.ensure(runtime.image) is not None:
            self.builds.start(entry, rebuild=rebuild)
        return await self.builds.with_status(runtime)

    async def _check_image(self, image: str) -> None:
        """The image is here and passes the quick runtime check (`conformance.QUICK`): a
        server answers, speaks this node's protocol, loads and runs a tiny function. Checked
        once per image id on this node: a rebuilt tag is checked again. (On the process
        backend every function runs the node's own Python server whatever the image: that is
        what is checked, once.)"""
        image_id = await self.backend.image_id(image)
        if image_id is None:
            raise ImageNotFound(
                f"image {image!r} is not present on this node and no registry can provide it; "
                "build or load it first"
            )
        async with self._checking:  # one check of an image, however many ask at once
            if image_id in self._conforming:
                return
            try:
                report = await self.backend.check_runtime(image, QUICK)
            except ImageMissing as exc:  # removed meanwhile
                raise ImageNotFound(f"image {image!r} is not present on this node") from exc
            if not report.passed:
                raise InvalidRuntime(
                    f"image {image!r} is not a Spinlet runtime: {report.summary()} "
                    f"(`spinlet runtimes check {image}` runs every check)",
                    image=image,
                    checks=[asdict(result) for result in report.results],
                )
            self._conforming.add(image_id)

    async def create(
        self, project_id: str, *, name: str, image: str, description: str | None = None
    ) -> Runtime:
        check_name("runtime", name)
        await self._check_image(image)
        runtime = Runtime(
            id=str(uuid.uuid4()),
            name=name,
            image=image,
            description=description,
            status=RuntimeStatus.AVAILABLE,
            is_public=False,
            project_id=project_id,
        )
        return await self.store.runtimes.create(runtime)

    async def get(self, project_id: str, ref: str) -> Runtime:
        """The runtime, with its status on this node."""
        return await self.builds.with_status(await self.store.runtimes.get(project_id, ref))

    async def list(self, project_id: str) -> list[Runtime]:
        """The runtimes the project sees, with their statuses on this node."""
        found = await self.store.runtimes.list(project_id)
        return [await self.builds.with_status(runtime) for runtime in found]

    async def _owned(self, project_id: str, ref: str) -> Runtime:
        runtime = await self.store.runtimes.get(project_id, ref)
        if runtime.project_id != project_id:
            raise Forbidden(f"runtime {runtime.name!r} is public and cannot be changed here")
        return runtime

    async def update(self, project_id: str, ref: str, changes: dict[str, Any]) -> Runtime:
        runtime = await self._owned(project_id, ref)
        if changes.get("name") is not None:
            check_name("runtime", changes["name"])
        if changes.get("image") is not None and changes["image"] != runtime.image:
            await self._check_image(changes["image"])
        return await self.store.runtimes.update(
            runtime.evolve(**{k: v for k, v in changes.items() if v is not None})
        )

    async def delete(self, project_id: str, ref: str) -> None:
        runtime = await self._owned(project_id, ref)
        if await self.store.runtimes.in_use(runtime.id):
            raise Forbidden(f"runtime {runtime.name!r} is still used by functions or versions")
        await self.store.runtimes.delete(runtime.id)

    async def pool(self, project_id: str, ref: str) -> PoolState:
        """The containers of this runtime: those of the project's functions and versions on it,
        and the stem cells of its image (free for any of them)."""
        runtime = await self.store.runtimes.get(project_id, ref)
        image_id = await self.backend.image_id(runtime.image)
        runs_on: dict[tuple[str, int], bool] = {}
        total = available = 0
        for container in await self.backend.containers():
            if container.function_id is None:
                ours = container.image in (runtime.image, image_id)
            else:
                key = (container.function_id, container.version or 0)
                if key not in runs_on:
                    runs_on[key] = await self._runs_on(project_id, *key) == runtime.id
                ours = runs_on[key]
            if ours:
                total += 1
                available += container.state in ("idle", "stem")
        return PoolState(runtime_id=runtime.id, total=total, available=available)

    async def _runs_on(self, project_id: str, function_id: str, version: int) -> str | None:
        """The runtime id a function version runs on (None: not the project's, or gone)."""
        if version:
            snapshot = await self.store.versions.find(project_id, function_id, version)
            return snapshot.runtime_id if snapshot else None
        function = await self.store.functions.find(project_id, function_id)
        return function.runtime_id if function else None
