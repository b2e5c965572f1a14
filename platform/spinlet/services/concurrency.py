"""Concurrency: how many executions of a function, and of a project, run at once on a node.

A project's quota is taken first, then its function's slot: one tenant cannot take every
execution slot of a node, whatever its functions' own limits. Executions beyond a limit wait
in line, for a bounded time and in a bounded line;
past either bound a synchronous execution is refused (`429`, with `Retry-After`) before it is
recorded. Asynchronous executions are simply not claimed while their function is saturated.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from spinlet.errors import TooManyRequests


@dataclass
class _Lane:
    limit: int
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class ConcurrencyGate:
    """Slots per key (a function's id, or a project's). `on_free` is called when a key that
    had no free slot gets one back (the dispatcher then claims queued executions it skipped)."""

    def __init__(
        self,
        *,
        max_waiting: int = 100,
        max_wait: float = 10.0,
        on_free: Callable[[], None] | None = None,
        kind: str = "function",
    ) -> None:
        self.kind = kind
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self.on_free = on_free
        self._lanes: dict[str, _Lane] = {}

    def saturated(self) -> set[str]:
        """Functions with no free slot on this node."""
        return {fid for fid, lane in self._lanes.items() if lane.running >= lane.limit}

    def running(self, function_id: str) -> int:
        lane = self._lanes.get(function_id)
        return lane.running if lane else 0

    async def acquire(
        self, function_id: str, limit: int, *, wait: bool = True, bounded: bool = True
    ) -> None:
        """Take one of the function's `limit` slots, waiting in line for one when `wait`.

        A `bounded` wait (a sync execution's) is refused when the line is full or after
        `max_wait` seconds; an unbounded one (an async execution already claimed) waits its
        turn however long it takes.
        """
        lane = self._lanes.setdefault(function_id, _Lane(limit))
        lane.limit = limit  # the function's setting may have changed
        if lane.running < limit and not lane.waiting:
            lane.running += 1
            return
        if not wait or (bounded and len(lane.waiting) >= self.max_waiting):
            raise self._refusal(function_id, limit)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.waiting.append(future)
        try:
            async with asyncio.timeout(self.max_wait if bounded else None):
                await future  # the releaser handed its slot over
        except TimeoutError:
            lane.waiting.remove(future)
            raise self._refusal(function_id, limit) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(function_id)  # it was handed a slot it will not use
            elif future in lane.waiting:
                lane.waiting.remove(future)
            raise

    def release(self, function_id: str) -> None:
        lane = self._lanes[function_id]
        while lane.waiting:
            future = lane.waiting.popleft()
            if not future.done():
                future.set_result(None)  # the slot goes straight to the next in line
                return
        lane.running -= 1
        if lane.running == 0:
            del self._lanes[function_id]
        if lane.running == lane.limit - 1 and self.on_free is not None:
            self.on_free()

    @asynccontextmanager
    async def slot(
        self, function_id: str, limit: int, *, wait: bool = True, bounded: bool = True
    ) -> AsyncIterator[None]:
        await self.acquire(function_id, limit, wait=wait, bounded=bounded)
        try:
            yield
        finally:
            self.release(function_id)

    def _refusal(self, function_id: str, limit: int) -> TooManyRequests:
        return TooManyRequests(
            f"{self.kind} {function_id} already runs its limit of {limit} execution(s) "
            "concurrently; try again later",
            retry_after=1,
        )


class ExecutionGates:
    """The project's quota, then the function's limit: both held while an execution runs."""

    def __init__(
        self,
        *,
        quota: int = 100,
        max_waiting: int = 100,
        max_wait: float = 10.0,
    ) -> None:
        self.quota = quota  # a project's executions at once on this node
        self.functions = ConcurrencyGate(max_waiting=max_waiting, max_wait=max_wait)
        self.projects = ConcurrencyGate(max_waiting=max_waiting, max_wait=max_wait, kind="project")

    def when_free(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a saturated function or project gets a slot back."""
        self.functions.on_free = self.projects.on_free = callback

    def saturated(self) -> tuple[set[str], set[str]]:
        """The functions, and the projects, with no free slot on this node."""
        return self.functions.saturated(), self.projects.saturated()

    async def acquire(
        self, project_id: str, function_id: str, limit: int, *, bounded: bool = True
    ) -> None:
        await self.projects.acquire(project_id, self.quota, bounded=bounded)
        try:
            await self.functions.acquire(function_id, limit, bounded=bounded)
        except BaseException:
            self.projects.release(project_id)
            raise

    def release(self, project_id: str, function_id: str) -> None:
        self.functions.release(function_id)
        self.projects.release(project_id)

    @asynccontextmanager
    async def slot(
        self, project_id: str, function_id: str, limit: int, *, bounded: bool = True
    ) -> AsyncIterator[None]:
        await self.acquire(project_id, function_id, limit, bounded=bounded)
        try:
            yield
        finally:
            self.release(project_id, function_id)
