"""The async queue's workers: claim queued executions from the store and run them.

The queue is the executions table, so an accepted execution survives any crash. Workers are
woken by an in-process event when work is queued, with a slow fallback poll; on start, what
this node left `running` is requeued (when the function allows retries) or ended as `lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from spinlet.domain import Execution
from spinlet.errors import FunctionNotReady, NotFound
from spinlet.services.concurrency import ExecutionGates
from spinlet.services.events import ExecutionEvents
from spinlet.services.runner import ExecutionRunner
from spinlet.services.targets import TargetResolver
from spinlet.store import Store

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        runner: ExecutionRunner,
        events: ExecutionEvents,
        gate: ExecutionGates,
        targets: TargetResolver,
        *,
        node_id: str,
        workers: int,
        poll_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.runner = runner
        self.events = events
        self.gate = gate
        self.targets = targets
        self.node_id = node_id
        self.workers = workers
        self.poll_interval = max(poll_interval, 1.0)
        self._slots = asyncio.Semaphore(workers)
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._passed_over = False  # the last claim skipped saturated functions or projects

    async def start(self) -> None:
        await self.recover()
        self._loop_task = asyncio.create_task(self._claim_forever(), name="dispatcher")

    async def recover(self) -> int:
        """End or requeue what an earlier run of this node left `running`."""
        left = await self.store.executions.running_on(self.node_id)
        recovered = [await self.recover_one(execution) for execution in left]
        if left:
            log.warning("recovered %d execution(s) left running by this node", sum(recovered))
        return sum(recovered)

    async def recover_one(self, execution: Execution) -> bool:
        """Requeue an execution whose node stopped (async, with retries left) or end it as
        `error`/`lost`; False when another node recovered it first."""
        function = await self.store.functions.find(execution.project_id, execution.function_id)
        retries = function.retries if function else 0
        retry = not execution.sync and execution.attempts <= retries
        if not await self.store.executions.recover(execution, retry=retry):
            return False
        if retry:
            self.events.announce_queued()
        else:
            self.events.announce_finished(execution.id)
        return True

    def slot_freed(self) -> None:
        """A saturated function or project got a slot back on this node: claim again if the
        last claim passed executions over for that reason (else there is nothing to claim)."""
        if self._passed_over:
            self.events.heard_queued()

    async def _claim_forever(self) -> None:
        while True:
            self.events.queued.clear()
            await self._claim_while_free()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self.events.queued.wait()

    async def _claim_while_free(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                # Functions at their concurrency limit, and projects at their quota, are passed
                # over until a slot frees; functions with a warm container here go first
                # (other nodes may have none).
                warm = await self.runner.warm_functions()
                functions, projects = self.gate.saturated()
                execution = await self.store.executions.claim_next(
                    self.node_id, skip=functions, skip_projects=projects, prefer=warm
                )
            except Exception:
                self._slots.release()
                self._passed_over = True
                log.exception("claiming queued executions failed; trying again later")
                return
            if execution is None:
                self._slots.release()
                self._passed_over = bool(functions or projects)
                return
            task = asyncio.create_task(self._run(execution), name=f"worker {execution.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, execution: Execution) -> None:
        try:
            try:
                target = await self.targets.target(
                    execution.project_id, execution.function_id, execution.function_version
                )
            except (NotFound, FunctionNotReady):
                await self.runner.run(execution)  # ends it as an error that says so
                return
            # Claimed while a slot was free, but a sync execution may have taken it since.
            async with self.gate.slot(
                execution.project_id, execution.function_id, target.concurrency, bounded=False
            ):
                await self.runner.run(execution, target)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("execution %s could not be run", execution.id)
        finally:
            self._slots.release()

    async def stop(self, grace: float) -> None:
        """Stop claiming; give running executions `grace` seconds, then end them as lost."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        for task in set(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running))
