"""Stem cells: sandboxes started in advance, initialised for no function yet, kept per shape.

A first execution of a function takes a ready stem cell of its shape (image id, memory, CPU,
network) and pays only `/init` and import instead of a container start. The keeper decides which
shapes get stem cells and refills them in the background:

- every shape `pin()` asked for (the built-in runtime with the default limits, at start), its
  image re-resolved at each refill so that a rebuilt tag gets fresh stem cells;
- every shape an execution used within the last `keep_alive` seconds.

It keeps `count` stem cells per shape, makes them only when there is room (never evicting, never
while an execution waits for a place) and at most `MAKE_AT_ONCE` at a time. A failure is logged
and that shape backs off (1 s, doubling up to a minute): it never reaches an execution. The keeper
runs when woken (a stem cell taken, a shape used, room freed, a back-off over), never on a timer,
so that a steady warm load makes no Docker call at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Protocol

from spinlet.errors import RuntimeBackendError
from spinlet.runtime.driver import SandboxShape

log = logging.getLogger(__name__)

MAKE_AT_ONCE = 2  # stem cells being made at the same time, all shapes together
RETRY_FIRST = 1.0  # seconds of back-off after a failure, doubled per failure up to RETRY_MAX
RETRY_MAX = 60.0

#: A `pin()` request: image reference, memory, cpu, network.
Pin = tuple[str, int, int, bool]


class StemHost(Protocol):
    """What the keeper needs from its pool."""

    closed: bool

    async def image_id(self, image: str) -> str | None: ...

    def stems(self, shape: SandboxShape) -> int:
        """Stem cells of `shape` held, being made, or with a place reserved."""
        ...

    def reserve_stem(self, shape: SandboxShape) -> bool:
        """Take a place for a new stem cell of `shape` if there is room without evicting."""
        ...

    async def grow_stem(self, shape: SandboxShape, image: str) -> None:
        """Make a stem cell of `shape` in the place reserved for it; raise on failure."""
        ...


class StemKeeper:
    def __init__(self, host: StemHost, count: int, keep_alive: float) -> None:
        self.host = host
        self.count = count
        self.keep_alive = keep_alive
        self._pins: dict[Pin, SandboxShape | None] = {}  # with the shape last resolved
        self._used: dict[SandboxShape, float] = {}  # monotonic time of the last use
        self._images: dict[SandboxShape, str] = {}  # an image reference, for display
        self._waiting: Counter[SandboxShape] = Counter()  # makers spawned, no place yet
        self._failures: Counter[SandboxShape | Pin] = Counter()
        self._retry_at: dict[SandboxShape | Pin, float] = {}
        self._short = False  # a shape lacks stem cells for want of room
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(MAKE_AT_ONCE)
        self._task: asyncio.Task[None] | None = None
        self._makers: set[asyncio.Task[None]] = set()

    # -- what the pool tells the keeper ------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name="spinlet-stem-keeper")

    async def stop(self) -> None:
        tasks = [*self._makers, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def pin(self, image: str, memory_size: int, cpu: int, network: bool = False) -> None:
        """Keep stem cells of this shape whether or not it was used lately."""
        self._pins.setdefault((image, memory_size, cpu, network), None)
        self.wake()

    def used(self, shape: SandboxShape, image: str | None = None) -> None:
        """An execution ran on `shape` (cheap: the warm path calls it too)."""
        self._used[shape] = time.monotonic()
        if image is not None:
            self._images.setdefault(shape, image)

    def wake(self) -> None:
        self._wake.set()

    def room_freed(self) -> None:
        if self._short:
            self.wake()

    def wanted(self, shape: SandboxShape) -> bool:
        """Whether stem cells of `shape` are kept (the reaper removes the others)."""
        if shape in self._pins.values():
            return True
        used = self._used.get(shape)
        return used is not None and time.monotonic() - used < self.keep_alive

    def image_of(self, shape: SandboxShape) -> str:
        return self._images.get(shape, shape.image_id)

    # -- the background task -----------------------------------------------------------------

    async def _keep(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_retry()):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._fill()
            except Exception:  # never let the keeper die; the next wake tries again
                log.exception("refilling stem cells failed")

    def _next_retry(self) -> float | None:
        now = time.monotonic()
        pending = [at - now for at in self._retry_at.values() if at > now]
        return min(pending) if pending else None

    async def _fill(self) -> None:
        self._short = False
        for shape in await self._wanted_shapes():
            if self._retry_at.get(shape, 0.0) > time.monotonic():
                continue
            missing = self.count - self.host.stems(shape) - self._waiting[shape]
            for _ in range(missing):
                self._waiting[shape] += 1
                task = asyncio.create_task(self._make(shape), name="spinlet-stem-cell")
                self._makers.add(task)
                task.add_done_callback(self._makers.discard)

    async def _wanted_shapes(self) -> list[SandboxShape]:
        shapes: list[SandboxShape] = []
        for pin, known in list(self._pins.items()):
            shape = known if self._retry_at.get(pin, 0.0) > time.monotonic() else None
            if shape is None:
                shape = await self._resolve(pin)
            if shape is not None and shape not in shapes:
                shapes.append(shape)
        now = time.monotonic()
        for shape, used in list(self._used.items()):
            if now - used >= self.keep_alive:
                del self._used[shape]
            elif shape not in shapes:
                shapes.append(shape)
        return shapes

    async def _resolve(self, pin: Pin) -> SandboxShape | None:
        image, memory_size, cpu, network = pin
        try:
            image_id = await self.host.image_id(image)
        except RuntimeBackendError as exc:
            self._failed(pin, f"image {image!r}", exc)
            return self._pins[pin]
        if image_id is None:
            self._failed(pin, f"image {image!r}", "it is not present on this node")
            return None
        shape = SandboxShape(image_id, memory_size, cpu, network)
        self._pins[pin] = shape
        self._images.setdefault(shape, image)
        self._succeeded(pin)
        return shape

    async def _make(self, shape: SandboxShape) -> None:
        waiting = True
        try:
            async with self._limit:
                # No await between these two: the place moves from "waiting" to the pool's books.
                self._waiting[shape] -= 1
                waiting = False
                if not self.host.reserve_stem(shape):
                    self._short = True
                    return
                await self.host.grow_stem(shape, self.image_of(shape))
        except Exception as exc:
            if not self.host.closed:
                self._failed(shape, f"a stem cell of {_describe(shape)}", exc)
        else:
            self._succeeded(shape)
        finally:
            if waiting:
                self._waiting[shape] -= 1

    def _failed(self, what: SandboxShape | Pin, name: str, problem: object) -> None:
        self._failures[what] += 1
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures[what] - 1))
        self._retry_at[what] = time.monotonic() + delay
        log.warning("could not make %s: %s (next try in %g s)", name, problem, delay)
        self.wake()  # recompute the keeper's timeout

    def _succeeded(self, what: SandboxShape | Pin) -> None:
        self._failures.pop(what, None)
        self._retry_at.pop(what, None)


def _describe(shape: SandboxShape) -> str:
    return (
        f"image {shape.image_id[:19]}, {shape.memory_size / 2**20:g} MiB, {shape.cpu} millicores"
        + (", network" if shape.network else "")
    )
