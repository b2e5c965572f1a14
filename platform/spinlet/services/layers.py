"""Dependency layers: asking for one, building it in the background, and finding it to run.

A function with requirements names a build (`LayerBuild`, keyed by its runtime and its
normalised requirements): functions that ask for the same share it. Every node runs a
`LayerBuilder`: it claims a `building` build with a lease (renewed while pip runs, so a node
that dies mid-build leaves it to another once the lease lapses), resolves the requirements into
wheels for the runtime's own Python (`layers.pip`), stores the result once under its content
address (`Layer`, in chunks streamed from a file) and moves the build and its functions to
`available`, or to `error` with pip's words. Nodes that run a function fetch its layer's chunks
once into their cache (`LayerCache`); they never resolve again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from spinlet import requirements as requirements_text
from spinlet.domain import Function, FunctionStatus, Layer, LayerBuild
from spinlet.errors import (
    FunctionNotReady,
    LayerBuildFailed,
    NotFound,
    RuntimeBackendError,
    StoreUnavailable,
)
from spinlet.layers import archive, pip
from spinlet.layers.cache import LayerCache
from spinlet.layers.target import PythonTarget
from spinlet.requirements import Requirements
from spinlet.runtime.backend import RuntimeBackend
from spinlet.services.runtime_builds import RuntimeBuilds
from spinlet.settings import Settings
from spinlet.store import Store

log = logging.getLogger(__name__)

#: How often an idle builder looks for builds other nodes asked for (its own wake it at once).
POLL_INTERVAL = 2.0
#: How often unused builds and layers are dropped.
SWEEP_INTERVAL = 300.0
#: How often a waiting execution re-reads its function while another node builds its layer.
WAIT_POLL = 0.5


def build_key(runtime_id: str, requirements: Requirements) -> str:
    """The build a function with these requirements on this runtime shares with others."""
    return hashlib.sha256(f"{runtime_id}\n{requirements.text}".encode()).hexdigest()


class LayerService:
    """What the functions and the runner ask of layers; owns the node's builder loop."""

    def __init__(
        self,
        store: Store,
        backend: RuntimeBackend,
        cache: LayerCache,
        settings: Settings,
        *,
        node_id: str,
        builds: RuntimeBuilds,
    ) -> None:
        self.store = store
        self.backend = backend
        self.builds = builds
        self.cache = cache
        self.settings = settings
        self.node_id = node_id
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # set (and replaced) whenever a build ends here
        self._task: asyncio.Task[None] | None = None
        self._targets: dict[str, PythonTarget] = {}

    # -- asking --------------------------------------------------------------------------------

    async def request(self, runtime_id: str, wanted: Requirements) -> LayerBuild:
        """The build of `wanted` for the runtime, asked for (again, after an error) when it is
        not available; the builder is woken."""
        build = await self.store.layers.request_build(
            build_key(runtime_id, wanted), runtime_id, wanted.text
        )
        if build.status is FunctionStatus.BUILDING:
            self._wake.set()
        return build

    async def rebuild(self, function: Function) -> None:
        """Resolve the function's requirements again (after an unreachable index, say); every
        function sharing its build is rebuilt with it."""
        if function.build_key is None:
            raise FunctionNotReady(
                f"function {function.name!r} has no requirements: there is nothing to build"
            )
        if not await self.store.layers.rebuild(function.build_key):
            # Its build is already running, or went with an older requirements text.
            build = await self.store.layers.find_build(function.build_key)
            if build is None:
                await self.store.layers.request_build(
                    function.build_key, function.runtime_id, function.requirements or ""
                )
        self._wake.set()

    async def local(self, layer_id: str) -> Path:
        """The layer's directory on this node, fetched from the store when it is not here."""
        layer = await self.store.layers.find_layer(layer_id)
        if layer is None:
            raise RuntimeBackendError(f"dependency layer {layer_id} is missing from the store")
        return await self.cache.path(layer, lambda: self.store.layers.chunks(layer_id))

    async def wait_ready(self, project_id: str, function_id: str, within: float) -> Function:
        """The function once its layer is built; `LayerBuildFailed` with the build's message
        when it fails, `TimeoutError` when it takes longer than `within` seconds."""
        async with asyncio.timeout(within):
            while True:
                changed = self._changed
                function = await self.store.functions.find(project_id, function_id)
                if function is None:
                    raise NotFound(f"function {function_id} not found")
                if function.status is FunctionStatus.ERROR:
                    raise LayerBuildFailed(function.status_message or "its layer failed to build")
                if function.status is not FunctionStatus.BUILDING:
                    return function
                # Built here: woken at once; built elsewhere: seen at the next read.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WAIT_POLL):
                        await changed.wait()

    # -- building ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._build_forever(), name="layer builder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _build_forever(self) -> None:
        swept = 0.0
        while True:
            try:
                while await self.build_one():
                    pass
                if time.monotonic() - swept > SWEEP_INTERVAL:
                    await self.sweep()
                    swept = time.monotonic()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:
                log.warning("layer builds wait for the database")
            except Exception:
                log.exception("the layer builder failed; it goes on")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._wake.wait()

    async def build_one(self) -> bool:
        """Claim one waiting build and take it to its end; False when none waits."""
        build = await self.store.layers.claim_build(self.node_id, self.settings.layer_lease)
        if build is None:
            return False
        renewing = asyncio.create_task(self._renew(build.key), name=f"lease {build.key[:12]}")
        try:
            layer_id = await self._resolve(build)
        except LayerBuildFailed as exc:
            log.info("layer build %s failed: %s", build.key[:12], exc.message)
            await self.store.layers.fail_build(build.key, self.node_id, exc.message)
        except OSError as exc:  # the node's disk (full, say): not the requirements' fault
            log.exception("layer build %s failed on this node", build.key[:12])
            message = f"the node could not store the layer: {exc.strerror or exc}"
            await self.store.layers.fail_build(build.key, self.node_id, message)
        else:
            await self.store.layers.finish_build(build.key, self.node_id, layer_id)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        self._announce()
        return True

    def _announce(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _renew(self, key: str) -> None:
        while True:
            await asyncio.sleep(self.settings.layer_lease / 3)
            with contextlib.suppress(StoreUnavailable):
                await self.store.layers.renew_build(key, self.node_id, self.settings.layer_lease)

    async def _target(self, runtime_id: str) -> PythonTarget:
        runtime = await self.store.runtimes.find_by_id(runtime_id)
        if runtime is None:
            raise LayerBuildFailed("the function's runtime no longer exists")
        target = self._targets.get(runtime.image)
        if target is None:
            try:
                await self.builds.wait(runtime.image)  # a shipped runtime not built here yet
                target = await self.backend.python_target(runtime.image)
            except RuntimeBackendError as exc:
                raise LayerBuildFailed(
                    f"the Python of runtime {runtime.name!r} could not be probed: {exc.message}"
                ) from exc
            self._targets[runtime.image] = target
        return target

    async def _resolve(self, build: LayerBuild) -> str:
        """Resolve and store the build's layer; returns its id."""
        wanted = requirements_text.parse(build.requirements)
        target = await self._target(build.runtime_id)
        s = self.settings
        scratch = Path(await asyncio.to_thread(_scratch, s.builds_dir))
        try:
            installed = await pip.install(
                wanted,
                target,
                scratch,
                timeout=s.layer_build_timeout,
                max_size=s.max_layer_size,
            )
            layer_id = pip.layer_id(target, installed.dependencies)
            if await self.store.layers.find_layer(layer_id) is None:
                await self._store(layer_id, target, installed, scratch)
            await self.cache.adopt(layer_id, installed.directory)
            return layer_id
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def _store(
        self, layer_id: str, target: PythonTarget, installed: pip.Installed, scratch: Path
    ) -> None:
        packed = scratch / "layer.tar"
        sha256, size = await asyncio.to_thread(archive.pack, installed.directory, packed)
        layer = Layer(
            id=layer_id,
            target=target.key,
            dependencies=installed.dependencies,
            size=installed.size,
            archive_sha256=sha256,
            archive_size=size,
            chunks=-(-size // archive.CHUNK_SIZE),
        )
        await self.store.layers.save_layer(layer, _chunks_of(packed))

    async def sweep(self) -> None:
        """Drop builds and layers nothing uses, and this node's copies of them."""
        for layer_id in await self.store.layers.drop_unused():
            log.info("dropped unused dependency layer %s", layer_id[:12])
        keep = await self.store.layers.layer_ids()
        await self.cache.prune(keep)


def _scratch(builds: Path) -> str:
    """A new, empty directory for one build (blocking)."""
    builds.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="build-", dir=builds)


async def _chunks_of(path: Path) -> AsyncIterator[bytes]:
    """The file's chunks, read one at a time in a thread (never the whole file in memory)."""
    chunks = archive.read_chunks(path)
    sentinel = b""
    while (chunk := await asyncio.to_thread(next, chunks, sentinel)) != sentinel:
        yield chunk
