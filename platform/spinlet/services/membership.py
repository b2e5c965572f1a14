"""This node among the others sharing the store: its heartbeat, the recovery of what stopped
nodes were running, and the cancellations other nodes were asked for.

Every `interval` seconds the node records a heartbeat, then ends or requeues (per the function's
`retries`) the running executions of every node whose last heartbeat is older than `lease`, and
stops those of its own executions whose cancellation another node recorded. The store decides
races: an execution is recovered once, by whichever node gets there first.

With its heartbeat the node publishes its report (its warm containers, capacity and runtimes:
`WorkerService.report`), and after it brings its provisioned containers in line with the counts
(in the background, `WorkerService.beat`).

A node judges the others only once it has itself been in touch with the store for a whole
lease: after the database was unreachable (restarted, say), every node's heartbeat is old, and
the others need that long to beat again before their silence means anything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from datetime import timedelta

from spinlet.domain import Execution, utcnow
from spinlet.services.dispatcher import Dispatcher
from spinlet.services.runner import ExecutionRunner
from spinlet.services.workers import WorkerService
from spinlet.store import Store

log = logging.getLogger(__name__)


class Membership:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        runner: ExecutionRunner,
        *,
        node_id: str,
        interval: float,
        lease: float,
        cancel_grace: float,
        workers: WorkerService | None = None,
    ) -> None:
        if lease <= interval:
            raise ValueError("the node lease must be longer than the heartbeat interval")
        self.store = store
        self.dispatcher = dispatcher
        self.runner = runner
        self.node_id = node_id
        self.interval = interval
        self.lease = lease
        self.cancel_grace = cancel_grace
        self.workers = workers
        self._task: asyncio.Task[None] | None = None
        self._cancelling: dict[str, asyncio.Task[bool]] = {}  # by execution id
        self._last_beat = 0.0  # monotonic times: the last heartbeat recorded,
        self._in_touch_since = 0.0  # and the first of those since the last gap of a lease

    async def start(self) -> None:
        await self._heartbeat()
        self._task = asyncio.create_task(self._beat_forever(), name="spinlet-membership")

    async def stop(self) -> None:
        tasks = [*self._cancelling.values(), *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self.workers is not None:
            await self.workers.stop()

    async def beat(self) -> int:
        """One round: heartbeat, recover stopped nodes' executions, honour remote cancels.
        Returns how many executions were recovered."""
        now = utcnow()
        await self._heartbeat()
        recovered = 0
        orphaned: Sequence[Execution] = []
        if self._last_beat - self._in_touch_since >= self.lease:  # in touch long enough
            live = await self.store.nodes.alive(now - timedelta(seconds=self.lease))
            orphaned = await self.store.executions.orphaned({*live, self.node_id})
        for execution in orphaned:
            if await self.dispatcher.recover_one(execution):
                recovered += 1
                log.warning(
                    "recovered execution %s of node %s, which stopped heartbeating",
                    execution.id,
                    execution.node_id,
                )
        for execution_id, mode in (
            await self.store.executions.cancels_requested(self.node_id)
        ).items():
            if execution_id in self._cancelling or not self.runner.is_running(execution_id):
                continue
            task = asyncio.create_task(
                self.runner.cancel(execution_id, kill=mode == "kill", grace=self.cancel_grace)
            )
            self._cancelling[execution_id] = task
            task.add_done_callback(functools.partial(self._cancelled, execution_id))
        if self.workers is not None:
            self.workers.beat()
        return recovered

    async def _heartbeat(self) -> None:
        started = time.monotonic()
        report = None
        if self.workers is not None:
            try:
                report = await self.workers.report()
            except Exception:
                log.exception("could not make this node's report; beating without it")
        await self.store.nodes.heartbeat(self.node_id, utcnow(), report)
        if started - self._last_beat > self.lease:  # silent for a lease: the store was away
            self._in_touch_since = started
        self._last_beat = started

    def _cancelled(self, execution_id: str, _task: asyncio.Task[bool]) -> None:
        self._cancelling.pop(execution_id, None)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat round failed; trying again in %g s", self.interval)
