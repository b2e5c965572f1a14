"""Cron jobs (Qinling's): made, read, paused, resumed, re-timed and cancelled by their owners.

The ticks themselves are fired by the scheduler (`services/scheduler.py`); every change here is
announced to it (on every node), so it sleeps until the right time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spinlet import cron
from spinlet.domain import JOB_TRANSITIONS, Job, JobStatus, utcnow
from spinlet.errors import Conflict, ValidationFailed
from spinlet.services.events import ExecutionEvents
from spinlet.services.executions import SCHEDULE_GRACE, ExecutionBuilder
from spinlet.store import Store

#: Attempts of an update that another change (a tick firing) keeps overtaking.
UPDATE_ATTEMPTS = 5


@dataclass(frozen=True)
class JobFields:
    """What a create or an update gives; None means "not given" (unchanged on update)."""

    name: str | None = None
    function: str | None = None  # id or name
    alias: str | None = None
    version: int | None = None
    function_input: Any = None
    pattern: str | None = None
    timezone: str | None = None
    first_execution_time: datetime | None = None
    next_execution_time: datetime | None = None
    count: int | None = None
    status: JobStatus | None = None


class JobService:
    def __init__(
        self,
        store: Store,
        builder: ExecutionBuilder,
        events: ExecutionEvents,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.builder = builder  # what its ticks' executions are made by
        self.events = events
        self.clock = clock

    def _check_future(self, name: str, when: datetime, now: datetime) -> None:
        if when < now - SCHEDULE_GRACE:
            raise ValidationFailed(f"{name} {when.isoformat()} has passed")

    async def create(self, project_id: str, fields: JobFields) -> Job:
        now = self.clock()
        if not fields.function and not fields.alias:
            raise ValidationFailed("function_id (or function_alias) is required")
        if fields.status is not None:
            raise ValidationFailed("status is read-only on create (a job starts running)")
        version = fields.version or 0
        target = await self.builder.targets.resolve(
            project_id, None if fields.alias else fields.function, version, fields.alias
        )
        function_input = fields.function_input
        self.builder.check_input(function_input)
        timezone = fields.timezone or "UTC"
        await cron.load(timezone)
        pattern = None if fields.pattern is None else cron.check_pattern(fields.pattern)
        count = fields.count
        if count is not None and count < 1:
            raise ValidationFailed("count must be 1 or more (or absent: no end)")
        first = fields.first_execution_time
        if first is not None:
            self._check_future("first_execution_time", first, now)
            first = max(first, now)
        if pattern is None:
            if first is None:
                raise ValidationFailed("give a pattern, a first_execution_time, or both")
            if count not in (None, 1):
                raise ValidationFailed("a job without a pattern runs once: count must be 1")
            count = 1
        # A pattern no date matches (`0 0 31 2 *`) is refused now, not at its first tick.
        following = None if pattern is None else cron.next_tick(pattern, timezone, now)
        next_time = first if first is not None else following
        job = Job(
            id=str(uuid.uuid4()),
            name=fields.name,
            function_id=target.function_id,
            function_version=version,
            function_alias=fields.alias,
            function_input=function_input,
            pattern=pattern,
            timezone=timezone,
            first_execution_time=first,
            next_execution_time=next_time,
            count=count,
            project_id=project_id,
            created_at=now,
            updated_at=now,
        )
        await self.store.jobs.create(job)
        self.events.announce_scheduled()
        return job

    async def get(self, project_id: str, job_id: str) -> Job:
        return await self.store.jobs.get(project_id, job_id)

    async def list(self, project_id: str | None) -> list[Job]:
        return await self.store.jobs.list(project_id)

    async def update(self, project_id: str, job_id: str, fields: JobFields) -> Job:
        """Change what is given: `status` pauses (`paused`), resumes (`running`) or cancels
        (`cancelled`); a new pattern or time zone, or a resume past the next tick, times the
        next tick from now; `next_execution_time` sets it."""
        for _ in range(UPDATE_ATTEMPTS):
            job = await self.store.jobs.get(project_id, job_id)
            await cron.load(fields.timezone or job.timezone)
            changed = self._changed(job, fields)
            if changed == job:
                return job
            if await self.store.jobs.update(changed, job):
                self.events.announce_scheduled()
                return await self.store.jobs.get(project_id, job_id)
        raise Conflict(f"job {job_id} kept changing (it fires often); try again")

    def _changed(self, job: Job, fields: JobFields) -> Job:
        now = self.clock()
        if fields.function or fields.alias or fields.version is not None:
            raise ValidationFailed("a job's function cannot be changed; make a new job")
        if fields.first_execution_time is not None or fields.count is not None:
            raise ValidationFailed("first_execution_time and count are set on create only")
        status = job.status if fields.status is None else fields.status
        if status is not job.status:
            if status is JobStatus.DONE:
                raise ValidationFailed("a job is done once it fired its count; it is not set")
            if status not in JOB_TRANSITIONS.get(job.status, frozenset()):
                raise Conflict(f"job {job.id} is {job.status.value}: it cannot be {status.value}")
        elif job.status in (JobStatus.DONE, JobStatus.CANCELLED) and (
            fields.pattern or fields.timezone or fields.next_execution_time
        ):
            raise Conflict(f"job {job.id} is {job.status.value}: it has no more ticks")
        pattern = job.pattern if fields.pattern is None else cron.check_pattern(fields.pattern)
        timezone = fields.timezone or job.timezone
        cron.zone(timezone)
        next_time = job.next_execution_time
        if fields.next_execution_time is not None:
            self._check_future("next_execution_time", fields.next_execution_time, now)
            next_time = max(fields.next_execution_time, now)
        elif pattern and (
            pattern != job.pattern
            or timezone != job.timezone
            or (status is JobStatus.RUNNING and next_time is not None and next_time < now)
        ):
            next_time = cron.next_tick(pattern, timezone, now)
        elif status is JobStatus.RUNNING and next_time is not None and next_time < now:
            next_time = now  # a run-once job resumed after its time: it runs now
        if status is JobStatus.CANCELLED:
            next_time = None
        function_input = job.function_input
        if fields.function_input is not None:
            function_input = fields.function_input
            self.builder.check_input(function_input)
        changed = job.evolve(
            name=job.name if fields.name is None else fields.name,
            status=status,
            pattern=pattern,
            timezone=timezone,
            next_execution_time=next_time,
            function_input=function_input,
        )
        return changed if changed == job else changed.evolve(updated_at=now)

    async def delete(self, project_id: str, job_id: str) -> None:
        """Delete the job; the executions it fired stay (their `job_id` says whose they were)."""
        await self.store.jobs.delete(project_id, job_id)
        self.events.announce_scheduled()
