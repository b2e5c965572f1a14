"""Cron jobs, and firing their ticks exactly once across the nodes sharing the store.

A tick is fired by `fire`: in one transaction, a conditional update moves the job's
`next_execution_time` on from the tick (only while it still is that tick, and the job still
`running`) and the tick's execution is inserted, its id derived from the job's and the tick's
(`tick_execution_id`). A node that loses the race changes nothing; a node killed before the
commit leaves the tick to fire again; after it, the tick is fired and its execution queued.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, select, update

from spinlet.domain import Execution, ExecutionStatus, Job, JobStatus
from spinlet.errors import NotFound
from spinlet.store.database import Database
from spinlet.store.executions import aware, insert_values
from spinlet.store.tables import executions, jobs

#: The namespace of the ids of the executions jobs fire (uuid5 of the job id and the tick).
TICKS = uuid.UUID("6f0d1c9e-4a53-5b7e-9a1c-3d3c8f6a2b10")

_FIELDS = (
    "name",
    "function_id",
    "function_version",
    "function_alias",
    "function_input",
    "pattern",
    "timezone",
    "first_execution_time",
    "next_execution_time",
    "count",
    "skipped",
    "last_execution_id",
    "project_id",
    "created_at",
    "updated_at",
)

#: A job with its last execution's status.
_READ = select(jobs, executions.c.status.label("last_execution_status")).outerjoin(
    executions, executions.c.id == jobs.c.last_execution_id
)


def tick_execution_id(job_id: str, tick: datetime) -> str:
    """The id of the execution a job fires at a tick: the same on every node."""
    return str(uuid.uuid5(TICKS, f"{job_id}@{tick.isoformat()}"))


def _job(row: Row[Any]) -> Job:
    last = row.last_execution_status
    return Job(
        id=row.id,
        status=JobStatus.read(row.status),
        last_execution_status=None if last is None else ExecutionStatus.read(last),
        **{name: getattr(row, name) for name in _FIELDS},
    )


def _values(job: Job) -> dict[str, Any]:
    return {"status": job.status.value, **{name: getattr(job, name) for name in _FIELDS}}


class JobRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, job: Job) -> Job:
        await self.db.write(
            lambda conn: conn.execute(jobs.insert(), {"id": job.id, **_values(job)})
        )
        return job

    async def find(self, project_id: str, job_id: str) -> Job | None:
        query = _READ.where(jobs.c.project_id == project_id, jobs.c.id == job_id)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return _job(row) if row else None

    async def get(self, project_id: str, job_id: str) -> Job:
        job = await self.find(project_id, job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return job

    async def list(self, project_id: str | None) -> list[Job]:
        """The project's jobs (None: every project's), oldest first."""
        query = _READ.order_by(jobs.c.created_at, jobs.c.id)
        if project_id is not None:
            query = query.where(jobs.c.project_id == project_id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_job(row) for row in rows]

    async def update(self, job: Job, was: Job) -> bool:
        """Write `job` if the row still has the status and next tick of `was` (the job as read):
        False when a tick fired or another change landed meanwhile (read it again)."""
        statement = (
            update(jobs)
            .where(
                jobs.c.id == was.id,
                jobs.c.project_id == was.project_id,
                jobs.c.status == was.status.value,
                jobs.c.next_execution_time.is_not_distinct_from(was.next_execution_time),
            )
            .values(**_values(job))
        )
        return await self.db.write(lambda conn: bool(conn.execute(statement).rowcount))

    async def delete(self, project_id: str, job_id: str) -> None:
        statement = delete(jobs).where(jobs.c.project_id == project_id, jobs.c.id == job_id)
        if not await self.db.write(lambda conn: conn.execute(statement).rowcount):
            raise NotFound(f"job {job_id!r} not found")

    # --- firing ----------------------------------------------------------------------------

    async def due(self, now: datetime, limit: int = 100) -> Sequence[Job]:
        """Running jobs whose next tick has come, the most overdue first."""
        query = (
            _READ.where(
                jobs.c.status == JobStatus.RUNNING.value,
                jobs.c.next_execution_time <= now,
            )
            .order_by(jobs.c.next_execution_time)
            .limit(limit)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_job(row) for row in rows]

    async def next_due(self) -> datetime | None:
        """The earliest next tick of a running job (None: none has one)."""
        query = select(func.min(jobs.c.next_execution_time)).where(
            jobs.c.status == JobStatus.RUNNING.value
        )
        value = await self.db.read(lambda conn: conn.execute(query).scalar())
        return aware(value)

    async def fire(self, job: Job, fired: Job, execution: Execution | None) -> bool:
        """Fire the tick `job.next_execution_time`: the job becomes `fired` (its next tick,
        count, status, …) and `execution` (None: the tick is skipped) is inserted, in one
        transaction, only while the job is still `running` at that tick. False, and nothing
        written, when it is not (another node fired it, or the job was changed)."""
        statement = (
            update(jobs)
            .where(
                jobs.c.id == job.id,
                jobs.c.status == JobStatus.RUNNING.value,
                jobs.c.next_execution_time == job.next_execution_time,
            )
            .values(**_values(fired))
        )
        row = None if execution is None else {"id": execution.id, **insert_values(execution)}
        exists = select(executions.c.id).where(executions.c.id == (row or {}).get("id"))

        def write(conn: Connection) -> bool:
            if not conn.execute(statement).rowcount:
                return False
            # The id is the tick's: present already only if the tick was set again by hand.
            if row is not None and conn.execute(exists).first() is None:
                conn.execute(executions.insert(), row)
            return True

        return await self.db.write(write)
