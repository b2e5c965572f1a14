"""Building the images of the shipped runtimes on this node: when asked, or on first use.

Every node registers every shipped runtime (`catalog.CATALOG`), but an image exists only where
it was built: a runtime's status says what *this* node can do with it (`available`,
`not_built`, `building`, or `error` with the reason its last build here failed), never what
the store holds. Only one build of a runtime runs at a time on a node; its progress goes to the
node's log.

First use: a function created on a runtime not built here starts its build; a sync call of one
is refused at once (`RuntimeNotReady`, 409: nothing recorded, nothing run) and starts it too; an
async execution, and a dependency layer, wait for it. Once a runtime's image was seen here it is
not asked of the engine again (a warm call makes no engine call), until a run finds it missing
(`forget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from spinlet.domain import Runtime, RuntimeStatus
from spinlet.errors import ImageMissing, RuntimeNotReady, SpinletError
from spinlet.runtime.catalog import ShippedRuntime

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
#: The id of a locally present image, or None (`RuntimeBackend.image_id`).
ImageId = Callable[[str], Awaitable[str | None]]


class ImageMaker(Protocol):
    """Where the images of shipped runtimes come from on this node."""

    async def present(self, runtime: ShippedRuntime) -> bool:
        """Whether the runtime's image is here (one engine call)."""

    async def build(self, runtime: ShippedRuntime, progress: Progress, rebuild: bool) -> None:
        """Build the runtime's image (and its base if needed), reporting each step."""


class DockerImages:
    """The Docker engine's images, built as `spinlet runtimes build NAME` does (in a thread:
    the Docker SDK blocks)."""

    def __init__(self, image_id: ImageId) -> None:
        self._image_id = image_id

    async def present(self, runtime: ShippedRuntime) -> bool:
        return await self._image_id(runtime.image) is not None

    async def build(self, runtime: ShippedRuntime, progress: Progress, rebuild: bool) -> None:
        await asyncio.to_thread(_build_sync, runtime, progress, rebuild)


def _build_sync(runtime: ShippedRuntime, progress: Progress, rebuild: bool) -> None:
    import docker

    from spinlet.runtime.images import ensure_runtime_image

    client = docker.from_env()
    try:
        ensure_runtime_image(client, runtime=runtime, rebuild=rebuild, progress=progress)
    finally:
        client.close()


class HostPython:
    """The process backend runs every function on the node's own interpreter: there is no
    image to build."""

    async def present(self, runtime: ShippedRuntime) -> bool:
        return True

    async def build(self, runtime: ShippedRuntime, progress: Progress, rebuild: bool) -> None:
        progress(f"runtime {runtime.name}: the process backend has no image to build")


@dataclass(frozen=True)
class BuildState:
    status: RuntimeStatus
    message: str | None = None


class RuntimeBuilds:
    def __init__(self, maker: ImageMaker, catalog: tuple[ShippedRuntime, ...]) -> None:
        self.maker = maker
        self._by_name = {entry.name: entry for entry in catalog}
        self._by_image = {entry.image: entry for entry in catalog}
        self._seen: set[str] = set()  # runtimes whose image was present here
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._errors: dict[str, str] = {}

    @property
    def catalog(self) -> tuple[ShippedRuntime, ...]:
        return tuple(self._by_name.values())

    def shipped(self, runtime: Runtime) -> ShippedRuntime | None:
        """The catalogue entry a registered runtime is (None: an image someone registered)."""
        entry = self._by_name.get(runtime.name)
        if entry is None or not runtime.is_public or runtime.image != entry.image:
            return None
        return entry

    async def state(self, entry: ShippedRuntime) -> BuildState:
        if entry.name in self._tasks:
            return BuildState(RuntimeStatus.BUILDING)
        if await self._present(entry):
            return BuildState(RuntimeStatus.AVAILABLE)
        if (message := self._errors.get(entry.name)) is not None:
            return BuildState(RuntimeStatus.ERROR, message)
        return BuildState(RuntimeStatus.NOT_BUILT)

    async def with_status(self, runtime: Runtime) -> Runtime:
        """The runtime with its status on this node (a shipped one's; others as stored).

        Only a stored `available` is refined by this node's build: a status written elsewhere
        (another one, or one this node does not know) stays as stored."""
        entry = self.shipped(runtime)
        if entry is None or runtime.status is not RuntimeStatus.AVAILABLE:
            return runtime
        state = await self.state(entry)
        return runtime.evolve(status=state.status, status_message=state.message)

    async def _present(self, entry: ShippedRuntime) -> bool:
        if entry.name in self._seen:
            return True
        if await self.maker.present(entry):
            self._seen.add(entry.name)
            return True
        return False

    def start(self, entry: ShippedRuntime, *, rebuild: bool = False) -> asyncio.Task[None]:
        """The build of the runtime's image on this node: the one running, or a new one."""
        task = self._tasks.get(entry.name)
        if task is None:
            task = asyncio.create_task(self._build(entry, rebuild), name=f"build {entry.name}")
            self._tasks[entry.name] = task
        return task

    async def _build(self, entry: ShippedRuntime, rebuild: bool) -> None:
        def progress(line: str) -> None:
            log.info("runtime %s: %s", entry.name, line)

        log.info("building the image of runtime %s (%s) on this node", entry.name, entry.image)
        try:
            await self.maker.build(entry, progress, rebuild)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, SpinletError) else f"{exc}"
            self._errors[entry.name] = message or type(exc).__name__
            log.error("runtime %s could not be built on this node: %s", entry.name, message)
        else:
            self._errors.pop(entry.name, None)
            self._seen.add(entry.name)
            log.info("runtime %s is built on this node (%s)", entry.name, entry.image)
        finally:
            self._tasks.pop(entry.name, None)

    async def ensure(self, image: str) -> ShippedRuntime | None:
        """None when `image` can run here now; else the shipped runtime it is, whose build
        has now started (or was running)."""
        entry = self._by_image.get(image)
        if entry is None or await self._present(entry):
            return None  # (while a rebuild runs, the image there still serves)
        self.start(entry)
        return entry

    async def check_ready(self, image: str) -> None:
        """`RuntimeNotReady` (after starting its build) when `image` is a shipped runtime's
        that this node has not built yet."""
        entry = await self.ensure(image)
        if entry is None:
            return
        failed = self._errors.get(entry.name)
        why = f" (its last build failed: {failed})" if failed else ""
        raise RuntimeNotReady(
            f"runtime {entry.name!r} is being built on this node{why}; nothing was run: retry "
            "in a minute or two (`spinlet runtimes list` shows when it is available)",
            retry_after=30,
        )

    async def wait(self, image: str) -> None:
        """Return once `image` can run here (building it first if it is a shipped runtime's
        that is not built); `ImageMissing` with the reason when its build fails."""
        entry = await self.ensure(image)
        if entry is None:
            return
        task = self._tasks.get(entry.name) or self.start(entry)
        await asyncio.shield(task)
        if entry.name not in self._seen:
            failed = self._errors.get(entry.name, "no reason given")
            raise ImageMissing(
                f"runtime {entry.name!r} could not be built on this node: {failed}",
                image=image,
            )

    def forget(self, image: str) -> None:
        """A run found the image missing: ask the engine again next time."""
        if (entry := self._by_image.get(image)) is not None:
            self._seen.discard(entry.name)

    async def close(self) -> None:
        """Stop waiting for builds (a build already in the engine finishes there)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
