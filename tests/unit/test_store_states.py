"""The store writes only the status changes the domain allows, and a node never claims (or
trips over) an execution in a status it does not know: on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from spinlet.domain import (
    Execution,
    ExecutionError,
    ExecutionStatus,
    Function,
    StartKind,
    StatusReason,
)
from spinlet.errors import IllegalTransition
from spinlet.queries import ExecutionQuery
from spinlet.store import Store
from tests.unit.test_store import make_function

S = ExecutionStatus


def _execution(function: Function, status: ExecutionStatus, **fields: object) -> Execution:
    return Execution(
        id=str(uuid.uuid4()),
        function_id=function.id,
        function_name=function.name,
        status=status,
        **fields,  # type: ignore[arg-type]
    )


async def _stored_status(store: Store, execution_id: str) -> str:
    query = text("SELECT status FROM executions WHERE id = :id")
    async with store.db.connect() as conn:
        return str((await conn.execute(query, {"id": execution_id})).scalar_one())


async def test_a_node_never_claims_an_execution_in_a_status_it_does_not_know(
    store: Store,
) -> None:
    function = await make_function(store)
    # A newer node of the fleet wrote a status (and reason) this node's code does not have.
    foreign = await store.executions.create(_execution(function, S.QUEUED))
    async with store.db.transaction() as conn:
        await conn.execute(
            text(
                "UPDATE executions SET status = 'paused', status_reason = 'preempted', "
                "start_kind = 'forked' WHERE id = :id"
            ),
            {"id": foreign.id},
        )
    scheduled = await store.executions.create(_execution(function, S.SCHEDULED))
    queued = await store.executions.create(_execution(function, S.QUEUED))

    claimed = await store.executions.claim_next("this-node")
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.node_id) == (queued.id, S.RUNNING, "this-node")
    assert await store.executions.claim_next("this-node") is None  # nor the scheduled one
    assert await store.executions.queue_depth() == 0

    # Reading and listing show it as `unknown`, its reason as written; nothing fails.
    seen = await store.executions.get("default", foreign.id)
    assert (seen.status, seen.status_reason, seen.start_kind) == (S.UNKNOWN, "preempted", None)
    listed = await store.executions.list(ExecutionQuery(project_id="default"))
    assert {e.id: e.status for e in listed} == {
        foreign.id: S.UNKNOWN,
        scheduled.id: S.SCHEDULED,
        queued.id: S.RUNNING,
    }
    # Nothing this node does changes it: neither a cancel nor retention touches it.
    assert not await store.executions.cancel_queued("default", foreign.id)
    assert await store.executions.purge(project_id="default", keep_last=0) == 0
    assert await _stored_status(store, foreign.id) == "paused"


async def test_an_end_is_written_only_over_a_running_execution(store: Store) -> None:
    function = await make_function(store)
    running = await store.executions.create(_execution(function, S.RUNNING, node_id="n"))
    queued = await store.executions.create(_execution(function, S.QUEUED, node_id="n"))

    for not_an_end in (S.SCHEDULED, S.QUEUED, S.RUNNING, S.UNKNOWN):
        with pytest.raises(IllegalTransition, match=f"end as {not_an_end.value}"):
            await store.executions.finish(running.evolve(status=not_an_end), logs="")
    assert not await store.executions.finish(queued.evolve(status=S.SUCCESS), logs="")
    assert await _stored_status(store, queued.id) == "queued"

    error = ExecutionError.of(StatusReason.TIMEOUT, "execution exceeded its timeout of 1 s")
    ended = running.evolve(
        status=S.FAILED,
        status_reason=StatusReason.TIMEOUT,
        error=error,
        start_kind=StartKind.STEM,
        container_id="c" * 64,
    )
    assert await store.executions.finish(ended, logs="tick\n")
    stored = await store.executions.get("default", running.id)
    assert (stored.status, stored.status_reason, stored.error, stored.start_kind) == (
        S.FAILED,
        StatusReason.TIMEOUT,
        error,
        StartKind.STEM,
    )
    assert stored.container_id == "c" * 64
    # An ended execution stays ended: the same end again, or another one, writes nothing.
    assert not await store.executions.finish(ended.evolve(status=S.SUCCESS), logs="")
    assert not await store.executions.cancel_queued("default", running.id)
    assert (await store.executions.get("default", running.id)).status is S.FAILED


async def test_an_execution_not_started_yet_is_cancelled_at_once(store: Store) -> None:
    function = await make_function(store)
    for status in (S.SCHEDULED, S.QUEUED):
        execution = await store.executions.create(_execution(function, status))
        assert await store.executions.cancel_queued("default", execution.id)
        cancelled = await store.executions.get("default", execution.id)
        assert (cancelled.status, cancelled.status_reason, cancelled.error) == (
            S.CANCELLED,
            StatusReason.CANCELLED,
            None,
        )
        assert cancelled.finished_at is not None
        assert cancelled.container_id is None  # it never reached one
