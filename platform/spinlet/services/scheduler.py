"""The scheduler: fires cron jobs' ticks and queues scheduled executions when their time comes.

Every node runs one. It sleeps until the earliest due time in the store (a job's next tick, a
scheduled execution's time), or until it hears that a job or a schedule changed (here, or on
another node over PostgreSQL's NOTIFY), or at most `max_sleep` seconds (a notification lost
while the LISTEN connection was down). Nothing polls at a fixed pace.

Exactly once across the fleet: a tick fires in one transaction that moves the job's
`next_execution_time` on (a conditional update on the tick) and inserts the tick's execution,
whose id is derived from the job and the tick (`store/jobs.py`); a scheduled execution is
queued by a conditional update on its status. Every node may try; one wins, once.

Policies (README, "Triggers"):
- Overlap: a tick that comes while the job's previous execution is still queued or running is
  skipped (counted in the job's `skipped`); executions of one job never pile up.
- Catch-up: the ticks missed while no node ran fire once, late, as one execution, and the next
  tick is the pattern's first after now: never a burst. The ticks it stands for are counted in
  `skipped` (up to `cron.MAX_COUNTED` per catch-up), so fired + skipped = the ticks passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from spinlet import cron
from spinlet.domain import (
    ExecutionSource,
    ExecutionStatus,
    Job,
    JobStatus,
    utcnow,
)
from spinlet.errors import SpinletError, StoreUnavailable
from spinlet.services.events import ExecutionEvents
from spinlet.services.executions import ExecutionBuilder, ExecutionRequest
from spinlet.store import Store
from spinlet.store.jobs import tick_execution_id

log = logging.getLogger(__name__)

#: The longest sleep: a change announced while this node did not listen is seen by then.
MAX_SLEEP = 30.0
#: After a pass that failed, or that left something due without firing it, the next waits so
#: long (no tight loop on a database that refuses).
RETRY_PAUSE = 1.0


def _pending(job: Job) -> bool:
    """The job's previous execution has not ended yet."""
    status = job.last_execution_status
    return status in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.SCHEDULED)


class Scheduler:
    def __init__(
        self,
        store: Store,
        executions: ExecutionBuilder,
        events: ExecutionEvents,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_sleep: float = MAX_SLEEP,
    ) -> None:
        self.store = store
        self.executions = executions
        self.events = events
        self.clock = clock
        self.max_sleep = max_sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _forever(self) -> None:
        while True:
            self.events.scheduled.clear()
            try:
                due, progressed = await self.run_due()
            except StoreUnavailable as exc:  # the database is restarting, say: said once a pass
                log.warning("firing jobs and scheduled executions waits for the store: %s", exc)
                delay = RETRY_PAUSE
            except Exception:
                log.exception("firing jobs and scheduled executions failed; trying again")
                delay = RETRY_PAUSE
            else:
                delay = self._delay(due, progressed)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.events.scheduled.wait()

    def _delay(self, due: datetime | None, progressed: bool) -> float:
        """Seconds until `due` (at most `max_sleep`); none when more is due at once."""
        if due is None:
            return self.max_sleep
        seconds = (due - self.clock()).total_seconds()
        if seconds <= 0:
            return 0.0 if progressed else RETRY_PAUSE
        return min(seconds, self.max_sleep)

    async def run_due(self) -> tuple[datetime | None, bool]:
        """One pass: queue the scheduled executions whose time has come and fire the jobs'
        ticks that have come. Returns the next due time (None: nothing waits) and whether
        this pass changed anything."""
        now = self.clock()
        queued = await self.store.executions.queue_scheduled(now)
        fired = 0
        progressed = bool(queued)
        for job in await self.store.jobs.due(now):
            try:
                done, created = await self.fire(job, now)
            except StoreUnavailable:
                raise
            except Exception:  # one job's trouble does not hold the others up
                log.exception("job %s: its tick could not be fired", job.id)
                continue
            progressed |= done
            fired += created
        if queued or fired:
            self.events.announce_queued()
        times = [await self.store.jobs.next_due(), await self.store.executions.next_scheduled()]
        known = [t for t in times if t is not None]
        return (min(known) if known else None), progressed

    async def fire(self, job: Job, now: datetime) -> tuple[bool, bool]:
        """Fire the job's due tick (or skip it): whether this node did (another may have
        first), and whether an execution was queued."""
        tick = job.next_execution_time
        assert tick is not None
        # The next tick after now, not after the one firing: the ticks missed meanwhile are
        # not fired (this firing stands for them) but counted as skipped.
        following, missed = None, 0
        if job.pattern is not None:
            await cron.load(job.timezone)
            missed, following = cron.catch_up(job.pattern, job.timezone, tick, now)
        fired = job.evolve(next_execution_time=following, skipped=job.skipped + missed)
        fired = fired.evolve(updated_at=now)
        execution = None
        if _pending(job):
            fired = fired.evolve(skipped=fired.skipped + 1)
            log.info("job %s: tick %s skipped, its last execution has not ended", job.id, tick)
        else:
            try:
                execution, _ = await self.executions.prepare(
                    job.project_id,
                    ExecutionRequest(
                        function=None if job.function_alias else job.function_id,
                        alias=job.function_alias,
                        version=job.function_version,
                        input=job.function_input,
                        sync=False,
                        source=ExecutionSource.JOB,
                        job_id=job.id,
                        id=tick_execution_id(job.id, tick),
                    ),
                )
            except StoreUnavailable:
                raise  # the tick is not skipped: it fires once the store is back
            except SpinletError as exc:  # its function or alias is gone, say
                fired = fired.evolve(skipped=fired.skipped + 1)
                log.warning("job %s: tick %s skipped: %s", job.id, tick, exc)
            else:
                count = None if job.count is None else job.count - 1
                fired = fired.evolve(count=count, last_execution_id=execution.id)
                if count == 0:
                    following = None
        if following is None:
            fired = fired.evolve(status=JobStatus.DONE, next_execution_time=None)
        done = await self.store.jobs.fire(job, fired, execution)
        return done, done and execution is not None
