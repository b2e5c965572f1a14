"""Executions: creating (sync or queued), reading, waiting, cancelling and purging them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from spinlet.domain import NOT_STARTED, Execution, ExecutionSource, ExecutionStatus, utcnow
from spinlet.errors import Conflict, ExecutionIdTaken, TooLarge, TooManyRequests, ValidationFailed
from spinlet.livelogs import Chunk
from spinlet.queries import ExecutionQuery
from spinlet.services.concurrency import ExecutionGates
from spinlet.services.events import ExecutionEvents
from spinlet.services.follow import LogFollowing, RemoteFollow
from spinlet.services.runner import ExecutionRunner
from spinlet.services.runtime_builds import RuntimeBuilds
from spinlet.services.targets import Target, TargetResolver
from spinlet.settings import Settings
from spinlet.store import Store


@dataclass(frozen=True)
class ExecutionRequest:
    function: str | None = None  # id or name
    alias: str | None = None
    version: int = 0
    input: Any = None
    sync: bool = True
    description: str | None = None
    source: ExecutionSource = ExecutionSource.API
    id: str | None = None  # client-chosen: makes retries of the create idempotent
    source_execution_id: str | None = None  # re-run that execution's function and input
    webhook_id: str | None = None  # the webhook that asks for it
    schedule: datetime | None = None  # queue it then, not now (async only)
    job_id: str | None = None  # the cron job firing it


#: How far in the past a `schedule` may be: within it, the execution is queued at once (a clock
#: a little behind, a request a little slow); beyond it, the request is refused.
SCHEDULE_GRACE = timedelta(seconds=60)


def canonical_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class ExecutionBuilder:
    """Makes the record of a new execution from a request (`prepare`): the one way every
    execution is made, whoever asks (the API, a cron job's tick)."""

    def __init__(self, targets: TargetResolver, *, max_input_size: int, node_id: str) -> None:
        self.targets = targets
        self.max_input_size = max_input_size
        self.node_id = node_id

    def check_input(self, value: Any) -> None:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > self.max_input_size:
            raise TooLarge(f"the input is {size} bytes; the limit is {self.max_input_size}")

    async def prepare(self, project_id: str, request: ExecutionRequest) -> tuple[Execution, Target]:
        """The record of a new execution, not yet recorded: its input checked, what it runs
        resolved (id or name, alias, version), `running` here when sync, else `queued` (or
        `scheduled`, for a `schedule` still to come)."""
        self.check_input(request.input)
        now = utcnow()
        status = ExecutionStatus.RUNNING if request.sync else ExecutionStatus.QUEUED
        if request.schedule is not None:
            if request.sync:
                raise ValidationFailed("schedule needs sync: false (a scheduled run is async)")
            if request.schedule < now - SCHEDULE_GRACE:
                raise ValidationFailed(
                    f"schedule {request.schedule.isoformat()} has passed (up to "
                    f"{SCHEDULE_GRACE.total_seconds():g} s ago is queued at once)"
                )
            if request.schedule > now:
                status = ExecutionStatus.SCHEDULED
        target = await self.targets.resolve(
            project_id, request.function, request.version, request.alias
        )
        hashed = {
            "function_id": target.function_id,
            "function_version": request.version,
            "function_alias": request.alias,
            "input": request.input,
            "sync": request.sync,
            "description": request.description,
        }
        if request.schedule is not None:  # (absent otherwise: older records hash the same)
            hashed["schedule"] = request.schedule.isoformat()
        request_hash = canonical_hash(hashed)
        execution = Execution(
            id=request.id or str(uuid.uuid4()),
            function_id=target.function_id,
            function_name=target.function_name,
            function_version=target.version,
            function_alias=target.alias,
            status=status,
            sync=request.sync,
            input=request.input,
            source=request.source,
            webhook_id=request.webhook_id,
            description=request.description,
            node_id=self.node_id if request.sync else None,
            request_hash=request_hash,
            attempts=1 if request.sync else 0,
            job_id=request.job_id,
            scheduled_at=request.schedule,
            project_id=project_id,
            created_at=now,
            started_at=now if request.sync else None,
            updated_at=now,
        )
        return execution, target


class ExecutionService:
    def __init__(
        self,
        store: Store,
        runner: ExecutionRunner,
        targets: TargetResolver,
        events: ExecutionEvents,
        gate: ExecutionGates,
        settings: Settings,
        node_id: str,
        remote_logs: RemoteFollow | None = None,
        *,
        builds: RuntimeBuilds,
    ) -> None:
        self.store = store
        self.builds = builds
        self.following = LogFollowing(store, runner.live, remote_logs, node_id=node_id)
        self.runner = runner
        self.targets = targets
        self.events = events
        self.gate = gate
        self.settings = settings
        self.node_id = node_id
        self.builder = ExecutionBuilder(
            targets, max_input_size=settings.max_input_size, node_id=node_id
        )

    async def _rerun(self, project_id: str, request: ExecutionRequest) -> ExecutionRequest:
        assert request.source_execution_id is not None
        source = await self.store.executions.get(project_id, request.source_execution_id)
        return ExecutionRequest(
            function=source.function_id,
            version=source.function_version,
            input=source.input,
            sync=request.sync,
            description=request.description or source.description,
            source=request.source,
            id=request.id,
            schedule=request.schedule,
        )

    async def create(self, project_id: str, request: ExecutionRequest) -> tuple[Execution, bool]:
        """A new execution: run to its end when sync, queued (or scheduled) when not.

        Returns the record and whether it was created (False: a retry with the same id).
        The record is committed before this returns.
        """
        if request.source_execution_id:
            request = await self._rerun(project_id, request)
        execution, target = await self.builder.prepare(project_id, request)
        if not request.sync:
            recorded, created = await self._record(execution, request.id is not None)
            if not created:
                pass
            elif execution.status is ExecutionStatus.SCHEDULED:
                self.events.announce_scheduled()  # the scheduler sleeps until its time
            else:
                self.events.announce_queued()
            return recorded, created
        # A shipped runtime not built on this node: its build starts, and the call is refused
        # (409) before anything is recorded.
        await self.builds.check_ready(target.image)
        # Beyond its project's quota or its function's concurrency a sync execution waits in
        # line, or is refused
        # (429) before anything is recorded.
        try:
            await self.gate.acquire(target.project_id, target.function_id, target.concurrency)
        except TooManyRequests:
            self.runner.refused()
            raise
        try:
            execution = execution.evolve(started_at=utcnow())
            recorded, created = await self._record(execution, request.id is not None)
            if not created:
                # A retry of a sync call still running: answer with its end, as the first would.
                wait = 0.0 if recorded.status.is_final else self.settings.max_wait
                return await self.get(project_id, recorded.id, wait=wait), False
            return await self.runner.run(execution, target), True
        finally:
            self.gate.release(target.project_id, target.function_id)

    async def _record(self, execution: Execution, client_id: bool) -> tuple[Execution, bool]:
        """Commit a new execution and return it (True). With a client-chosen id, an existing
        execution of the same request is returned instead (False); another request, or an
        id another project holds, is `ExecutionIdTaken`."""
        if not client_id:
            await self.store.executions.create(execution)
            return execution, True
        existing, created = await self.store.executions.create_once(execution)
        if not created and existing.request_hash != execution.request_hash:
            raise ExecutionIdTaken(execution.id)
        return existing, created

    async def get(self, project_id: str, execution_id: str, wait: float = 0.0) -> Execution:
        """The record; with `wait`, as soon as it is final or when `wait` seconds have passed."""
        execution = await self.store.executions.get(project_id, execution_id)
        deadline = time.monotonic() + min(wait, self.settings.max_wait)
        while not execution.status.is_final:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # The store is re-read at least every second: another process may finish it.
            await self.events.wait_finished(execution_id, min(remaining, 1.0))
            execution = await self.store.executions.get(project_id, execution_id)
        return execution

    async def logs(self, project_id: str, execution_id: str) -> str:
        return await self.store.executions.logs(project_id, execution_id)

    async def follow(
        self, project_id: str, execution_id: str, after: int = 0
    ) -> tuple[Execution, AsyncGenerator[Chunk | Execution]]:
        """The execution (NotFound before anything is sent), and its log past byte `after` as
        it grows, then its final record (`LogFollowing.follow`)."""
        execution = await self.store.executions.get(project_id, execution_id)
        return execution, self.following.follow(execution, after)

    async def list(self, query: ExecutionQuery) -> list[Execution]:
        return await self.store.executions.list(query)

    async def cancel(self, project_id: str, execution_id: str, *, kill: bool) -> Execution:
        execution = await self.store.executions.get(project_id, execution_id)
        if execution.status.is_final:
            raise Conflict(f"execution {execution_id} has already ended ({execution.status})")
        if execution.status is ExecutionStatus.UNKNOWN:
            raise Conflict(f"execution {execution_id} is in a status this node does not know")
        if execution.status in NOT_STARTED and await self.store.executions.cancel_queued(
            project_id, execution_id
        ):
            self.events.announce_finished(execution_id)
            return await self.store.executions.get(project_id, execution_id)
        # Running (perhaps claimed a moment ago): the node running it stops it.
        for _ in range(50):
            if self.runner.is_running(execution_id):
                await self.runner.cancel(execution_id, kill=kill, grace=self.settings.cancel_grace)
                return await self.get(project_id, execution_id, wait=5.0)
            execution = await self.store.executions.get(project_id, execution_id)
            if execution.status.is_final:
                return execution
            if execution.node_id not in (None, self.node_id):
                break
            await asyncio.sleep(0.02)  # claimed, and about to start on this node
        # Another node runs it: it sees the request at its next heartbeat and stops it.
        if not await self.store.executions.request_cancel(
            project_id, execution_id, "kill" if kill else "graceful"
        ):
            return await self.store.executions.get(project_id, execution_id)  # it just ended
        wait = self.settings.heartbeat_interval + (0 if kill else self.settings.cancel_grace) + 5
        execution = await self.get(project_id, execution_id, wait=wait)
        if not execution.status.is_final:
            raise Conflict(
                f"execution {execution_id} is running on node {execution.node_id}, which has "
                "not stopped it yet; its cancellation stays requested"
            )
        return execution

    async def delete(self, project_id: str, execution_id: str) -> None:
        execution = await self.store.executions.get(project_id, execution_id)
        if not execution.status.is_final:
            raise Conflict(f"execution {execution_id} is {execution.status}; cancel it first")
        await self.store.executions.delete(project_id, execution_id)

    async def purge(
        self, project_id: str, *, keep_last: int | None, to_datetime: datetime | None
    ) -> int:
        if keep_last is None and to_datetime is None:
            raise ValidationFailed("give keep_last or to_datetime")
        if keep_last is not None and keep_last < 0:
            raise ValidationFailed("keep_last must be 0 or more")
        return await self.store.executions.purge(
            project_id=project_id, keep_last=keep_last, created_before=to_datetime
        )
