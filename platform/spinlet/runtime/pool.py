"""A warm pool of runtime sandboxes with stem cells: the `RuntimeBackend` every driver shares.

An execution takes an idle sandbox initialised for exactly its function version (warm), else a
stem cell of its shape (started in advance, see `stems.py`) that it initialises (stem), else has
one created, started and initialised for it (cold). It then runs with a deadline the control plane
enforces: past it the sandbox is destroyed, whatever the code is doing. A sandbox serves one
execution at a time and goes back to the pool when it ends well (a function exception is ending
well); one that timed out, crashed or ran out of memory is destroyed, and so is an idle sandbox or
stem cell the driver reports as stopped (Docker events, process exits).

Idle sandboxes are reaped after `keep_alive` seconds. `max_containers` and `max_memory` (the sum
of memory limits) cap what exists, stem cells included: to make room, stem cells are evicted
first, then the least recently used idle sandbox; when all are busy a cold start waits for room.
`max_project_containers` caps one project's sandboxes (its quota, stem cells aside): at it, a
project's new sandbox replaces its own least recently used idle one, or waits for one of its own
busy ones to end, so one tenant cannot push every other tenant's warm sandboxes out. `slots.py`
keeps the books.

`provision` keeps a number of sandboxes initialised for a function version (provisioned
concurrency): the reaper and evictions leave them alone; they are made only where there is room
now (never waiting for it) and released by `provision` with a lower count or `unprovision`.

The warm path makes no driver call and nothing blocking: it is one request on a kept-open
Unix-socket connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from spinlet.domain import ExecutionError, StatusReason
from spinlet.errors import ImageMissing, InvalidPackage, RuntimeBackendError
from spinlet.layers.target import PythonTarget
from spinlet.logspool import LogSink, LogSpool, text_of
from spinlet.runtime.backend import (
    Capacity,
    CodeLoader,
    ContainerInfo,
    FunctionSpec,
    LayerLoader,
    OutcomeStatus,
    RunOutcome,
    RunRequest,
    StartKind,
    attach_outcome,
)
from spinlet.runtime.conformance import Report, check_image
from spinlet.runtime.driver import Driver, ExitReason, PoolKey, Sandbox, SandboxShape, pool_key
from spinlet.runtime.protocol import (
    CODE_DIR_FEATURE,
    ContainerGone,
    ContainerUnreachable,
    RuntimeConnection,
    check_layer_support,
)
from spinlet.runtime.slots import Slot, SlotTable
from spinlet.runtime.stems import StemKeeper

__all__ = ["PoolBackend", "PoolKey", "failure_error", "pool_key"]

log = logging.getLogger(__name__)

DEFAULT_KEEP_ALIVE = 300.0
DEFAULT_LOG_LIMIT = 1024 * 1024
DEFAULT_MAX_CONTAINERS = 64
DEFAULT_STEM_CELLS = 2
READY_TIMEOUT = 30.0  # how long a new sandbox may take to answer /health
EXIT_SETTLE = 3.0  # how long to wait for the engine to report why a sandbox stopped

#: A started sandbox for an execution: the slot, how it was obtained, and its start time.
Acquired = tuple[Slot, StartKind, float | None]


@dataclass(frozen=True)
class _Loaders:
    """What an execution brings to initialise a sandbox: its code and, when its function has
    one, its dependency layer (both loaded only if a sandbox must be initialised), and where
    the output of initialising goes (the execution's log)."""

    code: CodeLoader
    layer: LayerLoader | None
    log: LogSink


class _Stale(Exception):
    """The sandbox taken had died before the execution's first request reached it: take
    another one (nothing ran)."""


class PoolOptions(TypedDict, total=False):
    """How a pool is sized (the keyword arguments of `PoolBackend`)."""

    keep_alive: float
    log_limit: int
    max_containers: int
    max_memory: int | None
    max_project_containers: int | None
    stem_cells: int


class PoolBackend:
    """`RuntimeBackend` on top of a `Driver` (Docker containers, local processes)."""

    def __init__(
        self,
        driver: Driver,
        *,
        keep_alive: float = DEFAULT_KEEP_ALIVE,
        log_limit: int = DEFAULT_LOG_LIMIT,
        max_containers: int = DEFAULT_MAX_CONTAINERS,
        max_memory: int | None = None,
        max_project_containers: int | None = None,
        stem_cells: int = DEFAULT_STEM_CELLS,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        if max_containers < 1:
            raise ValueError("max_containers must be at least 1")
        if max_memory is not None and max_memory < 1:
            raise ValueError("max_memory must be a positive number of bytes (or None)")
        if stem_cells < 0:
            raise ValueError("stem_cells must be 0 (none) or more")
        if max_project_containers is not None and max_project_containers < 1:
            raise ValueError("max_project_containers must be at least 1 (or None)")
        self.max_project_containers = max_project_containers
        self.driver = driver
        self.keep_alive = keep_alive
        self.log_limit = log_limit
        self.stem_cells = stem_cells
        self.ready_timeout = ready_timeout
        self.closed = False
        self._table = SlotTable(max_containers, max_memory)
        self._stems = StemKeeper(self, stem_cells, keep_alive) if stem_cells else None
        self._waiters: list[asyncio.Future[None]] = []  # cold starts waiting for room
        # driver.create calls whose sandbox is not adopted yet (close() destroys those)
        self._creating: set[asyncio.Future[Sandbox]] = set()
        # destructions and discards in flight: they finish even when their caller is cancelled,
        # and close() waits for them
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._provisioning: dict[str, asyncio.Lock] = {}  # by function id
        self._released: Counter[str] = Counter()  # `unprovision` calls, by function id

    @property
    def max_containers(self) -> int:
        return self._table.max_containers

    @property
    def max_memory(self) -> int | None:
        return self._table.max_memory

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        removed = await self.driver.remove_leftovers()
        if removed:
            log.info("removed %d %s sandbox(es) left by an earlier run", removed, self.driver.name)
        await self.driver.watch(self._sandbox_stopped)
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="spinlet-pool-reaper")
        if self._stems is not None:
            self._stems.start()

    def prewarm(self, image: str, memory_size: int, cpu: int) -> None:
        """Keep stem cells of this shape from now on, used or not (no-op without stem cells).

        Returns at once: the image is resolved and the stem cells made in the background."""
        if self._stems is not None and not self.closed:
            self._stems.pin(image, memory_size, cpu)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Sandboxes being created now are not adopted once `closed` is set: destroyed below.
        creating = list(self._creating)
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._stems is not None:
            await self._stems.stop()
        self._wake_waiters()  # cold starts waiting for room give up
        await asyncio.gather(*creating, return_exceptions=True)
        slots = list(self._table)
        for slot in slots:
            self._table.forget(slot)
        held = {slot.sandbox.id for slot in slots}
        unadopted = [
            task.result()
            for task in creating
            if not task.cancelled() and task.exception() is None and task.result().id not in held
        ]
        await asyncio.gather(
            *(self._destroy(slot) for slot in slots),
            *(self._destroy_sandbox(sandbox) for sandbox in unadopted),
        )
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        try:
            await self.driver.remove_leftovers()
        finally:
            await self.driver.close()

    async def image_id(self, image: str) -> str | None:
        return await self.driver.image_id(image)

    async def image_labels(self, image: str) -> dict[str, str]:
        return await self.driver.image_labels(image)

    async def keep_image(self, image_id: str, keep: bool) -> None:
        await self.driver.keep_image(image_id, keep)

    async def capacity(self) -> Capacity:
        return await self.driver.capacity()

    async def python_target(self, image: str) -> PythonTarget:
        if self.closed:
            raise RuntimeBackendError("the runtime backend is closed")
        return await self.driver.python_target(image)

    async def check_runtime(self, image: str, checks: Sequence[str]) -> Report:
        if self.closed:
            raise RuntimeBackendError("the runtime backend is closed")
        timeout = self.ready_timeout
        return await check_image(self.driver, image, checks=checks, ready_timeout=timeout)

    async def containers(self) -> list[ContainerInfo]:
        return [
            ContainerInfo(
                id=slot.sandbox.id,
                image=slot.image,
                function_id=None if slot.spec is None else slot.spec.function_id,
                version=None if slot.spec is None else slot.spec.version,
                state=slot.state,
                created_at=slot.created_at,
                last_used_at=slot.last_used_at,
                name=slot.sandbox.name,
                project_id=None if slot.spec is None else slot.spec.project_id,
                provisioned=slot.provisioned,
            )
            for slot in self._table
        ]

    def stats(self) -> dict[str, int]:
        """Sandboxes by state (`starting`, `stem`, `busy`, `idle`), `containers` (all of them)
        and `memory_bytes` (their memory limits summed); places being created count as
        `starting`."""
        return self._table.stats()

    # -- executions --------------------------------------------------------------------------

    async def execute(
        self,
        spec: FunctionSpec,
        load_code: CodeLoader,
        request: RunRequest,
        load_layer: LayerLoader | None = None,
        log: LogSink | None = None,
    ) -> RunOutcome:
        if log is not None:
            return await self._execute(spec, load_code, request, load_layer, log)
        with LogSpool(self.log_limit) as own:
            return await self._execute(spec, load_code, request, load_layer, own)

    async def _execute(
        self,
        spec: FunctionSpec,
        load_code: CodeLoader,
        request: RunRequest,
        load_layer: LayerLoader | None,
        sink: LogSink,
    ) -> RunOutcome:
        if self.closed:
            raise RuntimeBackendError("the runtime backend is closed")
        if spec.layer_id is not None and load_layer is None:
            raise RuntimeBackendError(
                f"function {spec.function_name!r} has dependency layer {spec.layer_id} "
                "but no way to load it was given"
            )
        loaders = _Loaders(load_code, load_layer if spec.layer_id is not None else None, sink)
        key = pool_key(spec)
        while True:
            try:
                slot = self._table.take_idle(key)
                if slot is not None:
                    if self._stems is not None:
                        self._stems.used(slot.shape)
                    return await self._run(slot, request, StartKind.WARM, None, sink)
                acquired = await self._start(spec, key, loaders)
                if isinstance(acquired, RunOutcome):
                    return acquired
                slot, kind, init_ms = acquired
                return await self._run(slot, request, kind, init_ms, sink)
            except _Stale:
                continue  # the sandbox was dead before anything ran: take another one

    async def _start(
        self, spec: FunctionSpec, key: PoolKey, loaders: _Loaders
    ) -> Acquired | RunOutcome:
        """A sandbox initialised for `spec`: a warm one freed meanwhile, a stem cell, or a new
        one; or the outcome of a failed initialisation."""
        image_id = await self.driver.image_id(spec.image)
        if image_id is None:
            raise ImageMissing(
                f"the runtime image {spec.image!r} is not present on this node; "
                "build it with `spinlet runtimes build`",
                image=spec.image,
            )
        await self._check_capacity(spec)
        shape = SandboxShape.of(spec, image_id)
        if self._stems is not None:
            self._stems.used(shape, spec.image)
        try:
            if (warm := self._table.take_idle(key)) is not None:
                return warm, StartKind.WARM, None
            if (warm := await self._project_room(spec.project_id, key)) is not None:
                return warm, StartKind.WARM, None
            try:
                if (stem := self._table.take_stem(shape)) is not None:
                    return await self._start_stem(stem, spec, key, loaders)
                return await self._cold_start(spec, key, shape, loaders)
            finally:
                self._table.project_unreserve(spec.project_id)
        finally:
            if self._stems is not None:
                self._stems.wake()  # refill what was taken, keep stem cells of this shape

    async def _check_capacity(self, spec: FunctionSpec) -> None:
        """Limits this node cannot give (a function made on a larger node of a fleet) are
        refused before a sandbox is made, naming this node's maximum, not in the engine's
        words."""
        capacity = await self.driver.capacity()
        if spec.cpu > capacity.cpu or spec.memory_size > capacity.memory_size:
            raise RuntimeBackendError(
                f"function {spec.function_name!r} asks for cpu {spec.cpu} millicores and "
                f"memory_size {spec.memory_size} bytes; this node can give at most "
                f"{capacity.cpu} millicores and {capacity.memory_size} bytes"
            )

    async def _start_stem(
        self, slot: Slot, spec: FunctionSpec, key: PoolKey, loaders: _Loaders
    ) -> Acquired | RunOutcome:
        started = time.monotonic()
        slot.assign(spec, key)
        try:
            if slot.exited is not None:
                raise _Stale
            failure = await self._initialise(slot, loaders, StartKind.STEM, started)
        except BaseException as exc:
            await self._abandon(slot, exc, StartKind.STEM, started, loaders.log)
            raise
        if failure is not None:
            await self._discard(slot)
            return failure
        return slot, StartKind.STEM, _ms_since(started)

    async def _cold_start(
        self, spec: FunctionSpec, key: PoolKey, shape: SandboxShape, loaders: _Loaders
    ) -> Acquired | RunOutcome:
        """A sandbox created and initialised for `spec`, with the time that took (or a warm one
        or a stem cell that became free while waiting for room)."""
        found = await self._reserve(key, shape)
        if found is not None:
            if found.spec is None:
                return await self._start_stem(found, spec, key, loaders)
            return found, StartKind.WARM, None
        return await self._make(spec, key, shape, loaders)

    async def _make(
        self, spec: FunctionSpec, key: PoolKey, shape: SandboxShape, loaders: _Loaders
    ) -> Acquired | RunOutcome:
        """A sandbox created and initialised for `spec` in the place reserved for it."""
        started = time.monotonic()
        try:
            sandbox = await self._create(shape, spec)
        finally:
            self._table.unreserve(shape.memory_size)
        slot = Slot(sandbox, shape, RuntimeConnection(sandbox.socket_path), spec.image, spec, key)
        self._table.add(slot)
        try:
            failure = await self._wait_ready(slot, StartKind.COLD)
            if failure is None:
                failure = await self._initialise(slot, loaders, StartKind.COLD, started)
        except BaseException as exc:
            await self._abandon(slot, exc, StartKind.COLD, started, loaders.log)
            raise
        if failure is not None:
            await self._discard(slot)
            return failure
        return slot, StartKind.COLD, _ms_since(started)

    async def _abandon(
        self, slot: Slot, exc: BaseException, kind: StartKind, started: float, sink: LogSink
    ) -> None:
        """Discard a sandbox whose start was interrupted; a cancellation (a user's cancel
        during a cold start) carries the outcome, naming the container it had reached."""
        await asyncio.shield(self._discard(slot))
        if isinstance(exc, asyncio.CancelledError):
            logs = await text_of(sink)
            attach_outcome(
                exc, self._failed(slot, StatusReason.CANCELLED, kind, None, started, logs)
            )

    async def _wait_ready(self, slot: Slot, kind: StartKind) -> RunOutcome | None:
        """Wait for a new sandbox's runtime to answer; None once it does, else the outcome
        (an OOM at start is the function's; any other failure to start is the platform's)."""
        started = time.monotonic()

        async def exited() -> bool:
            if slot.discarded or slot.exited is not None:
                return True
            return await self.driver.inspect_exit(slot.sandbox) is not None

        try:
            await slot.conn.wait_ready(self.ready_timeout, exited=exited)
            await self.driver.seal(slot.sandbox)
        except ContainerGone as exc:
            if slot.discarded:
                return self._failed(slot, StatusReason.LOST, kind, None, started)
            if slot.exited == "oom" or await self.driver.inspect_exit(slot.sandbox) == "oom":
                return self._failed(slot, StatusReason.OOM, kind, None, started)
            raise RuntimeBackendError(
                f"the runtime in {self.driver.name} sandbox {slot.sandbox.name} "
                f"did not start: {exc}"
            ) from exc
        return None

    async def _initialise(
        self, slot: Slot, loaders: _Loaders, kind: StartKind, started: float
    ) -> RunOutcome | None:
        """/init a ready sandbox for its function (its code, and its dependency layer when it
        has one); None on success, else the failed outcome."""
        spec = slot.spec
        assert spec is not None
        if loaders.layer is not None:
            check_layer_support(slot.conn.features, spec.image)
        package = await loaders.code()
        layer = None if loaders.layer is None else await loaders.layer()
        code: bytes | str = package
        layer_dir: str | None = None
        try:
            if CODE_DIR_FEATURE in slot.conn.features:
                filled = await self.driver.fill_code(slot.sandbox, package, layer)
                code, layer_dir = filled.code, filled.layer
        except InvalidPackage as exc:
            error = ExecutionError(type="InvalidPackage", message=str(exc))
            return self._unloadable(slot, kind, started, error, await text_of(loaders.log))
        try:
            async with asyncio.timeout(spec.timeout):
                reply = await slot.conn.init(
                    code, spec.entry, spec.environment, self.log_limit, layer_dir
                )
        except TimeoutError:
            logs = await text_of(loaders.log)
            return self._failed(slot, StatusReason.TIMEOUT, kind, None, started, logs)
        except ContainerGone as exc:
            if kind is StartKind.STEM and _unreached(slot, exc):
                raise _Stale from exc
            reason = await self._exit_reason(slot)
            return self._failed(slot, reason, kind, None, started, await text_of(loaders.log))
        if reply.logs:  # output of importing the function: the start of this execution's log
            loaders.log.write("stdout", reply.logs, time.time())
        if reply.error is not None:
            error = ExecutionError.parse(reply.error)
            return self._unloadable(slot, kind, started, error, await text_of(loaders.log))
        return None

    def _unloadable(
        self, slot: Slot, kind: StartKind, started: float, error: ExecutionError, logs: str
    ) -> RunOutcome:
        """The outcome of code that could not be loaded: the function's fault."""
        return RunOutcome(
            status=OutcomeStatus.FAILED,
            status_reason=StatusReason.EXCEPTION,
            error=error,
            logs=logs,
            duration_ms=_ms_since(started),
            start_kind=kind,
            image_id=slot.sandbox.image_id,
            container_id=slot.sandbox.id,
        )

    async def _run(
        self,
        slot: Slot,
        request: RunRequest,
        kind: StartKind,
        init_ms: float | None,
        sink: LogSink,
    ) -> RunOutcome:
        """Run one execution on `slot`; `_Stale` when a warm sandbox was found dead first.

        Its output goes to `sink` as it arrives (protocol 2) or with the reply (1); however
        the run ends, the outcome carries what the sink got, and a cancellation carries it too
        (`attach_outcome`) for the caller to record."""
        spec = slot.spec
        assert spec is not None
        if kind is StartKind.WARM and slot.exited is not None:
            await self._discard(slot)
            raise _Stale
        slot.state = "busy"
        slot.last_used_at = time.time()
        payload: dict[str, Any] = {
            "input": request.input,
            "execution_id": request.execution_id,
            "deadline": time.time() + spec.timeout,
            "function_id": spec.function_id,
            "function_name": spec.function_name,
            "function_version": spec.version,
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(spec.timeout):  # no extra task: cheaper than wait_for
                reply = await slot.conn.run(payload, sink.write)
        except TimeoutError:
            await self._discard(slot)
            logs = await text_of(sink)
            return self._failed(slot, StatusReason.TIMEOUT, kind, init_ms, started, logs)
        except ContainerGone as exc:
            try:
                if kind is StartKind.WARM and _unreached(slot, exc):
                    raise _Stale from exc
                reason = await self._exit_reason(slot)
            finally:
                await asyncio.shield(self._discard(slot))
            return self._failed(slot, reason, kind, init_ms, started, await text_of(sink))
        except BaseException as exc:  # cancelled, or the runtime broke the protocol
            await asyncio.shield(self._discard(slot))
            if isinstance(exc, asyncio.CancelledError):
                logs = await text_of(sink)
                stopped = self._failed(slot, StatusReason.CANCELLED, kind, init_ms, started, logs)
                attach_outcome(exc, stopped)
            raise
        self._release(slot)
        raw_duration = reply.get("duration_ms")
        duration_ms = (
            float(raw_duration) if isinstance(raw_duration, int | float) else _ms_since(started)
        )
        whole = reply.get("logs")  # protocol 1: the whole log, now
        if isinstance(whole, str) and whole:
            sink.write("stdout", whole, time.time())
        common: dict[str, Any] = {
            "logs": await text_of(sink),
            "duration_ms": duration_ms,
            "start_kind": kind,
            "init_ms": init_ms,
            "image_id": slot.sandbox.image_id,
            "container_id": slot.sandbox.id,
        }
        if "error" in reply:
            error = ExecutionError.parse(reply["error"])
            return RunOutcome(OutcomeStatus.FAILED, StatusReason.EXCEPTION, error=error, **common)
        return RunOutcome(OutcomeStatus.SUCCESS, result=reply.get("result"), **common)

    def _failed(
        self,
        slot: Slot,
        reason: StatusReason,
        kind: StartKind,
        init_ms: float | None,
        started: float,
        logs: str = "",
    ) -> RunOutcome:
        """The outcome of a run the control plane ended (or saw end), with what it wrote."""
        assert slot.spec is not None
        return RunOutcome(
            status=OutcomeStatus(reason.status.value),
            status_reason=reason,
            error=failure_error(reason, slot.spec),
            logs=logs,
            duration_ms=_ms_since(started),
            start_kind=kind,
            init_ms=init_ms,
            image_id=slot.sandbox.image_id,
            container_id=slot.sandbox.id,
        )

    async def _exit_reason(self, slot: Slot) -> StatusReason:
        """Why a sandbox stopped answering, giving the engine a moment to notice."""
        deadline = time.monotonic() + EXIT_SETTLE
        while True:
            if slot.discarded:  # the pool destroyed it (the backend is closing)
                return StatusReason.LOST
            if slot.exited == "oom":
                return StatusReason.OOM
            reason = await self.driver.inspect_exit(slot.sandbox)
            if reason is not None or time.monotonic() >= deadline:
                return StatusReason(reason or slot.exited or "crashed")
            await asyncio.sleep(0.02)

    # -- provisioned concurrency -------------------------------------------------------------

    async def provision(
        self,
        spec: FunctionSpec,
        count: int,
        load_code: CodeLoader,
        load_layer: LayerLoader | None = None,
    ) -> int:
        if self.closed:
            raise RuntimeBackendError("the runtime backend is closed")
        key = pool_key(spec)
        released = self._released[spec.function_id]
        lock = self._provisioning.setdefault(spec.function_id, asyncio.Lock())
        async with lock:
            if self._released[spec.function_id] != released:
                return 0  # released meanwhile: that is the newer wish
            kept = self._provisioned(spec.function_id)
            self._retire([slot for slot in kept if slot.key != key])
            kept = [slot for slot in kept if slot.key == key]
            if len(kept) >= count:
                # idle ones go first, then the busy ones (once their execution ends)
                kept.sort(key=lambda slot: slot.state != "idle")
                self._retire(kept[: len(kept) - count])
                return count
            # idle sandboxes of this very code are kept as they are, then new ones are made
            for slot in self._table.idle_slots():
                if len(kept) < count and slot.key == key and not slot.provisioned:
                    slot.provisioned = True
                    kept.append(slot)
            missing = count - len(kept)
            if missing > 0:
                with LogSpool(self.log_limit) as sink:
                    loaders = _Loaders(load_code, load_layer if spec.layer_id else None, sink)
                    starts = [
                        self._provision_one(spec, key, loaders, released) for _ in range(missing)
                    ]
                    # each one ends before the sink closes, however the others end
                    made = await asyncio.gather(*starts, return_exceptions=True)
                for outcome in made:
                    if isinstance(outcome, BaseException):
                        raise outcome
                missing -= sum(1 for outcome in made if outcome is True)
            return count - missing

    def unprovision(self, function_id: str) -> None:
        self._released[function_id] += 1  # those being made now are not kept either
        self._retire(self._provisioned(function_id))

    def _provisioned(self, function_id: str) -> list[Slot]:
        return [
            slot
            for slot in self._table
            if slot.provisioned and slot.spec is not None and slot.spec.function_id == function_id
        ]

    def _retire(self, slots: list[Slot]) -> None:
        """No longer provisioned: an idle one is destroyed now, a busy one once it ends."""
        for slot in slots:
            slot.provisioned = False
            if slot.state == "idle":
                self._table.forget(slot)
                self._spawn(self._discard(slot))
            else:
                slot.retiring = True

    async def _provision_one(
        self, spec: FunctionSpec, key: PoolKey, loaders: _Loaders, released: int
    ) -> bool:
        """One more sandbox initialised for `spec` and kept idle; False when there is no room
        for it now (under the node's caps and the project's quota, evicting only idle
        sandboxes that are not provisioned and stem cells)."""
        image_id = await self.driver.image_id(spec.image)
        if image_id is None:
            raise ImageMissing(
                f"the runtime image {spec.image!r} is not present on this node", image=spec.image
            )
        await self._check_capacity(spec)
        shape = SandboxShape.of(spec, image_id)
        if not await self._project_room_now(spec.project_id):
            return False
        try:
            while True:
                try:
                    if (stem := self._table.take_stem(shape)) is not None:
                        acquired = await self._start_stem(stem, spec, key, loaders)
                    elif await self._room_now(shape):
                        acquired = await self._make(spec, key, shape, loaders)
                    else:
                        return False
                    break
                except _Stale:
                    continue
        finally:
            self._table.project_unreserve(spec.project_id)
            if self._stems is not None:
                self._stems.wake()
        if isinstance(acquired, RunOutcome):
            error = acquired.error
            raise RuntimeBackendError(
                f"function {spec.function_name!r} could not be initialised: "
                f"{error.message if error is not None else acquired.status_reason}"
            )
        slot = acquired[0]
        # released while it was made: an ordinary warm sandbox then, reaped in time
        slot.provisioned = self._released[spec.function_id] == released
        self._release(slot)
        return slot.provisioned

    async def _project_room_now(self, project_id: str) -> bool:
        """A place under the project's quota (its least recently used idle sandbox that is
        not provisioned goes when at it), taken now or not at all."""
        cap = self.max_project_containers
        if cap is not None and self._table.project_count(project_id) >= cap:
            idle = self._table.project_idle(project_id)
            if not idle:
                return False
            await self._evict_for_project(project_id, idle[0])
            return True
        self._table.project_reserve(project_id)
        return True

    async def _room_now(self, shape: SandboxShape) -> bool:
        """A place for a new sandbox of `shape` (evicting what `victims` allows), reserved now
        or not at all."""
        memory = shape.memory_size
        if self._table.fits(memory):
            self._table.reserve(memory)
            return True
        victims = self._table.victims(memory)
        if victims is None or self._waiters:  # executions waiting for room go first
            return False
        await self._evict(victims, memory)
        return True

    # -- the pool ----------------------------------------------------------------------------

    def _release(self, slot: Slot) -> None:
        if self.closed or slot.retiring or not self._table.holds(slot):
            self._spawn(self._discard(slot))
            return
        self._table.put_idle(slot)
        self._wake_waiters()

    async def _project_room(self, project_id: str, key: PoolKey) -> Slot | None:
        """Take a place among the project's sandboxes, under its quota: at it, its least
        recently used idle sandbox goes, or this waits for one of its busy ones to end.

        Returns a warm slot of `key` instead when one became free while waiting."""
        while True:
            if self.closed:
                raise RuntimeBackendError("the runtime backend is closed")
            cap = self.max_project_containers
            if cap is None or self._table.project_count(project_id) < cap:
                self._table.project_reserve(project_id)
                return None
            if (warm := self._table.take_idle(key)) is not None:
                return warm
            idle = self._table.project_idle(project_id)
            if idle:
                await self._evict_for_project(project_id, idle[0])
                return None
            await self._wait_for_room()

    async def _evict_for_project(self, project_id: str, victim: Slot) -> None:
        """Destroy one of the project's idle sandboxes to take its place under the quota."""
        self._table.forget(victim)
        self._table.project_reserve(project_id)
        try:
            await self._destroy_all([victim])
        except BaseException:
            self._table.project_unreserve(project_id)
            raise

    async def _wait_for_room(self) -> None:
        """Until a sandbox is released or destroyed."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def _reserve(self, key: PoolKey, shape: SandboxShape) -> Slot | None:
        """Take a place for a new sandbox of `shape`, evicting stem cells, then the least
        recently used idle sandboxes, when at a cap.

        Returns a warm slot of `key` or a stem cell of `shape` instead when one became free
        while waiting for room."""
        memory = shape.memory_size
        if self.max_memory is not None and memory > self.max_memory:
            raise RuntimeBackendError(
                f"the function's memory_size ({memory} bytes) is more than this node's "
                f"max_memory ({self.max_memory} bytes)"
            )
        while True:
            if self.closed:
                raise RuntimeBackendError("the runtime backend is closed")
            if self._table.fits(memory):
                self._table.reserve(memory)
                return None
            if (warm := self._table.take_idle(key)) is not None:
                return warm
            if (stem := self._table.take_stem(shape)) is not None:
                return stem
            victims = self._table.victims(memory)
            if victims is not None:
                await self._evict(victims, memory)
                return None
            await self._wait_for_room()

    async def _evict(self, victims: list[Slot], memory: int) -> None:
        """Destroy `victims` to take a place of `memory` bytes."""
        for victim in victims:
            self._table.forget(victim)
        self._table.reserve(memory)
        try:
            await self._destroy_all(victims)
        except BaseException:
            self._table.unreserve(memory)
            raise

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _room_freed(self, *, stem_lost: bool = False) -> None:
        self._wake_waiters()
        if self._stems is not None:
            if stem_lost:
                self._stems.wake()  # replace it
            else:
                self._stems.room_freed()

    def _sandbox_stopped(self, sandbox_id: str, reason: ExitReason) -> None:
        """The driver saw a sandbox stop. An idle one or a stem cell is dropped now; a busy or
        starting one is left to its execution, which notices the failed call."""
        slot = self._table.get(sandbox_id)
        if slot is None or slot.discarded:
            return
        if slot.exited != "oom":
            slot.exited = reason
        if slot.state in ("idle", "stem"):
            log.warning(
                "%s sandbox %s stopped while %s (%s): dropped from the pool",
                self.driver.name,
                slot.sandbox.name,
                slot.state,
                reason,
            )
            self._spawn(self._discard(slot))

    async def _discard(self, slot: Slot) -> None:
        self._table.forget(slot)
        try:
            await self._destroy_all([slot])
        finally:
            self._room_freed(stem_lost=slot.spec is None)

    async def _destroy_all(self, slots: list[Slot]) -> None:
        """Destroy slots the books let go of, to the end even if the caller is cancelled."""
        if slots:
            await asyncio.shield(self._spawn(_gather(*(self._destroy(slot) for slot in slots))))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _destroy(self, slot: Slot) -> None:
        if slot.destroyed:
            return
        slot.destroyed = True
        await slot.conn.close()
        await self._destroy_sandbox(slot.sandbox)

    async def _destroy_sandbox(self, sandbox: Sandbox) -> None:
        try:
            await self.driver.destroy(sandbox)
        except RuntimeBackendError as exc:
            log.error("could not destroy sandbox %s: %s", sandbox.name, exc)

    async def _create(self, shape: SandboxShape, spec: FunctionSpec | None) -> Sandbox:
        """`driver.create`; a sandbox nobody takes (cancelled, closing) is destroyed."""
        task = asyncio.ensure_future(self.driver.create(shape, spec))
        self._creating.add(task)
        try:
            sandbox = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._destroy_when_created)
            raise
        except BaseException:
            self._creating.discard(task)
            raise
        self._creating.discard(task)
        if self.closed:  # close() took it in its list of sandboxes to destroy
            raise RuntimeBackendError("the runtime backend is closed")
        return sandbox

    def _destroy_when_created(self, task: asyncio.Future[Sandbox]) -> None:
        self._creating.discard(task)
        if not self.closed and not task.cancelled() and task.exception() is None:
            self._spawn(self._destroy_sandbox(task.result()))

    # -- stem cells (the keeper's host) ------------------------------------------------------

    def stems(self, shape: SandboxShape) -> int:
        return self._table.stems(shape)

    def reserve_stem(self, shape: SandboxShape) -> bool:
        """A place for a stem cell, only if there is room now and no execution waits for it."""
        if self.closed or self._waiters or not self._table.fits(shape.memory_size):
            return False
        self._table.reserve(shape.memory_size, stem=shape)
        return True

    async def grow_stem(self, shape: SandboxShape, image: str) -> None:
        """Make a stem cell in the place `reserve_stem` took; raise when it does not start."""
        try:
            sandbox = await self._create(shape, None)
        except BaseException:
            self._table.unreserve(shape.memory_size, stem=shape)
            self._room_freed()
            raise
        self._table.unreserve(shape.memory_size, stem=shape)
        slot = Slot(sandbox, shape, RuntimeConnection(sandbox.socket_path), image)
        self._table.add(slot)
        try:
            await slot.conn.wait_ready(self.ready_timeout, exited=lambda: self._stem_exited(slot))
            await self.driver.seal(sandbox)
        except ContainerGone as exc:
            await self._discard(slot)
            raise RuntimeBackendError(
                f"the runtime in {self.driver.name} sandbox {sandbox.name} did not start: {exc}"
            ) from exc
        except BaseException:
            await asyncio.shield(self._discard(slot))
            raise
        if slot.discarded:  # the backend is closing
            await slot.conn.close()
            return
        self._table.put_stem(slot)
        self._wake_waiters()  # a stem cell may serve, or be evicted for, a waiting cold start

    async def _stem_exited(self, slot: Slot) -> bool:
        if slot.discarded or slot.exited is not None:
            return True
        return await self.driver.inspect_exit(slot.sandbox) is not None

    # -- reaping -----------------------------------------------------------------------------

    async def reap(self) -> int:
        """Destroy the idle sandboxes unused for `keep_alive` seconds, and the stem cells of
        shapes no longer wanted; return how many."""
        now = time.monotonic()
        expired = [
            slot
            for slot in self._table.idle_slots()
            if now - slot.idle_since >= self.keep_alive and not slot.provisioned
        ]
        if self._stems is not None:
            expired += [
                slot for slot in self._table.stem_slots() if not self._stems.wanted(slot.shape)
            ]
        for slot in expired:
            self._table.forget(slot)
        await self._destroy_all(expired)
        if expired:
            self._room_freed()
        return len(expired)

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(self.keep_alive / 4, 10.0))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception:
                log.exception("reaping idle sandboxes failed")


def failure_error(reason: StatusReason, spec: FunctionSpec) -> ExecutionError:
    """The `error` of an execution the control plane ended (timeout, oom, crashed, lost)."""
    messages = {
        StatusReason.TIMEOUT: f"execution exceeded its timeout of {spec.timeout:g} s",
        StatusReason.LOST: "the runtime backend shut down during the execution",
        StatusReason.OOM: "the function ran out of memory (memory_size "
        f"{spec.memory_size / 2**20:g} MiB) and its container was killed",
    }
    crashed = "the function's container exited unexpectedly during the execution"
    return ExecutionError.of(reason, messages.get(reason, crashed))


async def _gather(*work: Awaitable[None]) -> None:
    await asyncio.gather(*work)


def _unreached(slot: Slot, exc: ContainerGone) -> bool:
    """The request never reached a sandbox that died by itself: another one may serve it."""
    return isinstance(exc, ContainerUnreachable) and not slot.discarded


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000
