"""Executions: the durable record of every invocation, with its output kept apart.

The async queue is this table: `queued` rows are claimed atomically by a worker
(`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has a single writer).

A status changes only through `_moving(transition(sources, target))`: `domain.transition` refuses
(`IllegalTransition`) a change the table does not allow, and the update it yields writes only
while the row is still in one of `sources`, so a change another node made first stands. Rows
in a status this node does not know (a newer node's) are never in `sources`: never claimed,
cancelled or purged here, and read as `unknown`.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Update,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from spinlet.domain import (
    FINAL_STATUSES,
    NOT_STARTED,
    Execution,
    ExecutionError,
    ExecutionSource,
    ExecutionStatus,
    FunctionStatus,
    StartKind,
    StatusReason,
    Transition,
    transition,
    utcnow,
)
from spinlet.errors import ExecutionIdTaken, IllegalTransition, NotFound
from spinlet.queries import ExecutionQuery
from spinlet.store import queries
from spinlet.store.database import Database
from spinlet.store.tables import execution_outputs, executions, functions

_RECORD_FIELDS = (
    "function_id",
    "function_name",
    "function_version",
    "function_alias",
    "sync",
    "input",
    "duration_ms",
    "init_ms",
    "image_id",
    "container_id",
    "webhook_id",
    "description",
    "node_id",
    "expired",
    "request_hash",
    "attempts",
    "cancel_requested",
    "job_id",
    "scheduled_at",
    "project_id",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)

_FINAL = [s.value for s in FINAL_STATUSES]

#: Claiming takes only rows in a status this change starts from (`queued`): a status this node
#: does not know (a newer node's, during a rolling upgrade) is never in it.
_CLAIM = transition(ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)
#: A scheduled execution whose time has come.
_QUEUE_SCHEDULED = transition(ExecutionStatus.SCHEDULED, ExecutionStatus.QUEUED)

#: An execution that can run now: of a published version (it pins its own layer), or of the
#: function's current code while that is not `building` (its layer is not stored yet; the
#: execution stays queued). Checked row by row as the claim walks the queue in order: one look
#: at the function's primary key, only for version-0 rows, so no index is needed.
_RUNNABLE = or_(
    executions.c.function_version != 0,
    ~exists().where(
        functions.c.id == executions.c.function_id,
        functions.c.status == FunctionStatus.BUILDING.value,
    ),
)


@functools.cache
def _moving(change: Transition[ExecutionStatus]) -> Update:
    """The conditional update of a status change, built once per change: it writes only while
    the row is still in one of the statuses the change starts from. Every status change of an
    execution goes through here, so only the changes `domain.TRANSITIONS` allows are written."""
    return (
        update(executions)
        .where(executions.c.status.in_(change.source_values))
        .values(status=change.target.value)
    )


@functools.cache
def _finishing(change: Transition[ExecutionStatus]) -> Update:
    """Recording an end: only while the execution still runs on the node that records it."""
    return _moving(change).where(
        executions.c.id == bindparam("execution_id"),
        executions.c.node_id == bindparam("running_on"),
    )


# Statements of the hot path, built once: the parameters name the columns they set.
_INSERT = executions.insert()
_DELETE_OUTPUT = delete(execution_outputs).where(
    execution_outputs.c.execution_id == bindparam("execution_id")
)
_INSERT_OUTPUT = execution_outputs.insert()


def _execution(row: Row[Any], result: Any = None) -> Execution:
    """An execution as stored; statuses and reasons this node does not know (written by a
    newer node) read as `unknown` and as written, never as an error."""
    fields = {name: getattr(row, name) for name in _RECORD_FIELDS}
    return Execution(
        id=row.id,
        status=ExecutionStatus.read(row.status),
        status_reason=StatusReason.read(row.status_reason),
        error=None if row.error is None else ExecutionError.parse(row.error),
        start_kind=StartKind.read(row.start_kind),
        source=ExecutionSource(row.source),
        result=result,
        **fields,
    )


def aware(value: datetime | None) -> datetime | None:
    """An aggregate of a time column (read without the column's type: naive on SQLite)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def insert_values(execution: Execution) -> dict[str, Any]:
    """The columns of a new execution (its id aside), its status included."""
    return {"status": execution.status.value, **_values(execution)}


def _values(execution: Execution) -> dict[str, Any]:
    """The columns of an execution, but its status: that changes only by a `Transition`."""
    values = {name: getattr(execution, name) for name in _RECORD_FIELDS}
    reason, error, start_kind = execution.status_reason, execution.error, execution.start_kind
    values["status_reason"] = None if reason is None else str(reason)
    values["error"] = None if error is None else error.as_json()
    values["start_kind"] = None if start_kind is None else start_kind.value
    values["source"] = execution.source.value
    return values


class ExecutionRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, execution: Execution) -> Execution:
        values = {"id": execution.id, **insert_values(execution)}
        await self.db.write(lambda conn: conn.execute(_INSERT, values))
        return execution

    async def create_once(self, execution: Execution) -> tuple[Execution, bool]:
        """Insert, or return the execution that already has this id (and False). An id taken
        in another project is `ExecutionIdTaken`, which tells nothing of that execution."""
        try:
            return await self.create(execution), True
        except IntegrityError as exc:
            existing = await self.find(execution.project_id, execution.id)
            if existing is None:  # the id belongs to another project
                raise ExecutionIdTaken(execution.id) from exc
            return existing, False

    async def finish(self, execution: Execution, *, logs: str) -> bool:
        """Record how a running execution ended, with its output (result and logs), in one
        commit. False, and nothing written, when it no longer runs on its node: another node
        took that node for dead and recovered it meanwhile (the first end recorded stands)."""
        if not execution.status.is_final:
            raise IllegalTransition(f"an execution cannot end as {execution.status.value}")
        statement = _finishing(transition(ExecutionStatus.RUNNING, execution.status))
        values = {"execution_id": execution.id, "running_on": execution.node_id}
        values.update(_values(execution))
        output = {"execution_id": execution.id, "result": execution.result, "logs": logs}

        def write(conn: Connection) -> bool:
            if not conn.execute(statement, values).rowcount:
                return False
            conn.execute(_DELETE_OUTPUT, {"execution_id": execution.id})
            conn.execute(_INSERT_OUTPUT, output)
            return True

        return await self.db.write(write)

    async def find(self, project_id: str, execution_id: str) -> Execution | None:
        query = (
            select(executions, execution_outputs.c.result)
            .outerjoin(execution_outputs, execution_outputs.c.execution_id == executions.c.id)
            .where(executions.c.project_id == project_id, executions.c.id == execution_id)
        )
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return _execution(row, row.result) if row else None

    async def get(self, project_id: str, execution_id: str) -> Execution:
        execution = await self.find(project_id, execution_id)
        if execution is None:
            raise NotFound(f"execution {execution_id!r} not found")
        return execution

    async def logs(self, project_id: str, execution_id: str) -> str:
        query = (
            select(executions.c.id, execution_outputs.c.logs)
            .outerjoin(execution_outputs, execution_outputs.c.execution_id == executions.c.id)
            .where(executions.c.project_id == project_id, executions.c.id == execution_id)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"execution {execution_id!r} not found")
        return row.logs or ""

    async def list(self, query: ExecutionQuery) -> list[Execution]:
        columns: list[Any] = [executions]
        if query.include_output:
            columns.append(execution_outputs.c.result)
        stmt = queries.where(query, select(*columns))
        if query.include_output:
            stmt = stmt.outerjoin(
                execution_outputs, execution_outputs.c.execution_id == executions.c.id
            )
        async with self.db.connect() as conn:
            if query.marker:
                find = select(executions).where(executions.c.id == query.marker)
                if query.project_id is not None:
                    find = find.where(executions.c.project_id == query.project_id)
                marker = (await conn.execute(find)).first()
                if marker is None:
                    raise NotFound(f"marker execution {query.marker!r} not found")
                stmt = stmt.where(queries.after(query, marker))
            rows = await conn.execute(queries.order(query, stmt).limit(query.limit))
            return [_execution(row, row.result if query.include_output else None) for row in rows]

    async def delete(self, project_id: str, execution_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                delete(execution_outputs).where(execution_outputs.c.execution_id == execution_id)
            )
            result = await conn.execute(
                delete(executions).where(
                    executions.c.project_id == project_id, executions.c.id == execution_id
                )
            )
        if not result.rowcount:
            raise NotFound(f"execution {execution_id!r} not found")

    # --- the queue -------------------------------------------------------------------------

    async def claim_next(
        self,
        node_id: str,
        skip: Collection[str] = (),
        prefer: Collection[str] = (),
        skip_projects: Collection[str] = (),
    ) -> Execution | None:
        """Atomically move the oldest queued execution to `running` on this node, passing over
        the executions of the functions in `skip` and of the projects in `skip_projects`, and
        those of a `building` function's current code; the oldest of the functions in `prefer`
        (warm here) first, when there is one."""
        now = utcnow()
        claimed = {
            "node_id": node_id,
            "started_at": now,
            "updated_at": now,
            "attempts": executions.c.attempts + 1,
        }

        def statement(among: Collection[str] | None) -> Any:
            oldest = (
                select(executions.c.id)
                .where(executions.c.status.in_(_CLAIM.source_values))
                .where(_RUNNABLE)
                .where(executions.c.function_id.not_in(skip) if skip else true())
                .where(executions.c.project_id.not_in(skip_projects) if skip_projects else true())
                .where(executions.c.function_id.in_(among) if among else true())
                .order_by(executions.c.created_at, executions.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            return (
                _moving(_CLAIM)
                .where(executions.c.id == oldest)
                .values(**claimed)
                .returning(*executions.c)
            )

        def claim(conn: Connection) -> Row[Any] | None:
            row = conn.execute(statement(prefer)).first() if prefer else None
            return row if row is not None else conn.execute(statement(None)).first()

        row = await self.db.write(claim)
        return _execution(row) if row else None

    async def cancel_queued(self, project_id: str, execution_id: str) -> bool:
        """Cancel an execution that has not started (scheduled or queued); False when it has."""
        now = utcnow()
        async with self.db.transaction() as conn:
            result = await conn.execute(
                _moving(transition(NOT_STARTED, ExecutionStatus.CANCELLED))
                .where(executions.c.project_id == project_id, executions.c.id == execution_id)
                .values(
                    status_reason=StatusReason.CANCELLED.value,
                    cancel_requested="kill",
                    finished_at=now,
                    updated_at=now,
                )
            )
        return bool(result.rowcount)

    async def request_cancel(self, project_id: str, execution_id: str, mode: str) -> bool:
        """Mark a running execution for cancellation; False when it is not running. (Its
        node then makes the change itself, when it has stopped it.)"""
        cancel = transition(ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED)
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(executions)
                .where(
                    executions.c.project_id == project_id,
                    executions.c.id == execution_id,
                    executions.c.status.in_(cancel.source_values),
                )
                .values(cancel_requested=mode, updated_at=utcnow())
            )
        return bool(result.rowcount)

    async def running_on(self, node_id: str) -> Sequence[Execution]:
        query = select(executions).where(
            executions.c.status == ExecutionStatus.RUNNING.value,
            executions.c.node_id == node_id,
        )
        async with self.db.connect() as conn:
            return [_execution(row) for row in await conn.execute(query)]

    async def cancels_requested(self, node_id: str) -> dict[str, str]:
        """Executions running on this node that another node was asked to cancel, with how
        (`kill` or `graceful`)."""
        query = select(executions.c.id, executions.c.cancel_requested).where(
            executions.c.status == ExecutionStatus.RUNNING.value,
            executions.c.node_id == node_id,
            executions.c.cancel_requested.is_not(None),
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return {row.id: row.cancel_requested for row in rows}

    async def orphaned(self, live_nodes: Collection[str]) -> Sequence[Execution]:
        """Running executions of nodes that are not in `live_nodes`."""
        query = select(executions).where(
            executions.c.status == ExecutionStatus.RUNNING.value,
            executions.c.node_id.not_in(live_nodes) if live_nodes else true(),
        )
        async with self.db.connect() as conn:
            return [_execution(row) for row in await conn.execute(query)]

    async def recover(self, execution: Execution, *, retry: bool) -> bool:
        """Requeue (`retry`) or end as lost an execution its node left running. Only if it
        still is running on that node: False when another node recovered it first."""
        now = utcnow()
        target = ExecutionStatus.QUEUED if retry else ExecutionStatus.ERROR
        still = _moving(transition(ExecutionStatus.RUNNING, target)).where(
            executions.c.id == execution.id, executions.c.node_id == execution.node_id
        )
        if retry:
            values: dict[str, Any] = {"node_id": None, "started_at": None, "updated_at": now}
        else:
            lost = ExecutionError.of(StatusReason.LOST, "the node running it stopped")
            values = {
                "status_reason": StatusReason.LOST.value,
                "error": lost.as_json(),
                "finished_at": now,
                "updated_at": now,
            }

        def write(conn: Connection) -> bool:
            if not conn.execute(still.values(**values)).rowcount:
                return False
            if not retry:
                conn.execute(_DELETE_OUTPUT, {"execution_id": execution.id})
                conn.execute(
                    _INSERT_OUTPUT, {"execution_id": execution.id, "result": None, "logs": ""}
                )
            return True

        return await self.db.write(write)

    # --- scheduled executions --------------------------------------------------------------

    async def queue_scheduled(self, now: datetime) -> int:
        """Queue the scheduled executions whose time has come; how many. A conditional update:
        a row another node queued first is no longer `scheduled`, so each is queued once."""
        statement = (
            _moving(_QUEUE_SCHEDULED).where(executions.c.scheduled_at <= now).values(updated_at=now)
        )
        return await self.db.write(lambda conn: int(conn.execute(statement).rowcount or 0))

    async def next_scheduled(self) -> datetime | None:
        """When the next scheduled execution is due (None: none waits)."""
        query = select(func.min(executions.c.scheduled_at)).where(
            executions.c.status.in_(_QUEUE_SCHEDULED.source_values)
        )
        value = await self.db.read(lambda conn: conn.execute(query).scalar())
        return aware(value)

    async def queue_depth(self) -> int:
        query = select(func.count()).where(executions.c.status == ExecutionStatus.QUEUED.value)
        async with self.db.connect() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    # --- retention -------------------------------------------------------------------------

    async def expire_outputs(self, finished_before: datetime) -> int:
        """Drop the result and log of executions finished before the time; mark them expired."""
        stale = select(executions.c.id).where(
            executions.c.status.in_(_FINAL),
            executions.c.finished_at < finished_before,
            executions.c.expired.is_(False),
        )
        async with self.db.transaction() as conn:
            await conn.execute(
                delete(execution_outputs).where(execution_outputs.c.execution_id.in_(stale))
            )
            result = await conn.execute(
                update(executions)
                .where(executions.c.id.in_(stale))
                .values(expired=True, updated_at=utcnow())
            )
        return int(result.rowcount or 0)

    async def purge(
        self,
        *,
        project_id: str | None = None,
        finished_before: datetime | None = None,
        created_before: datetime | None = None,
        keep_last: int | None = None,
    ) -> int:
        """Delete finished executions (and their output) matching all the conditions given."""
        doomed = select(executions.c.id).where(executions.c.status.in_(_FINAL))
        if project_id is not None:
            doomed = doomed.where(executions.c.project_id == project_id)
        if finished_before is not None:
            doomed = doomed.where(executions.c.finished_at < finished_before)
        if created_before is not None:
            doomed = doomed.where(executions.c.created_at < created_before)
        if keep_last is not None:
            newest = (
                select(executions.c.id)
                .where(executions.c.status.in_(_FINAL))
                .order_by(executions.c.created_at.desc(), executions.c.id.desc())
                .limit(keep_last)
            )
            if project_id is not None:
                newest = newest.where(executions.c.project_id == project_id)
            doomed = doomed.where(executions.c.id.not_in(newest.scalar_subquery()))
        async with self.db.transaction() as conn:
            ids = [row.id for row in await conn.execute(doomed)]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                await conn.execute(
                    delete(execution_outputs).where(execution_outputs.c.execution_id.in_(chunk))
                )
                await conn.execute(delete(executions).where(executions.c.id.in_(chunk)))
        return len(ids)
