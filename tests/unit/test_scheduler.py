"""Cron jobs and scheduled executions, driven by an injected clock (no sleeping), on SQLite and on
PostgreSQL: each tick fires once whoever tries it, skips while the last execution runs, catches
up once, and scheduled executions are queued once at their time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from spinlet.domain import (
    Execution,
    ExecutionSource,
    ExecutionStatus,
    Job,
    JobStatus,
)
from spinlet.errors import Conflict, NotFound, ValidationFailed
from spinlet.queries import ExecutionQuery, Filter
from spinlet.services.events import ExecutionEvents
from spinlet.services.executions import ExecutionBuilder
from spinlet.services.jobs import JobFields, JobService
from spinlet.services.scheduler import Scheduler
from spinlet.services.targets import TargetResolver
from spinlet.store import Store
from spinlet.store.jobs import tick_execution_id
from spinlet.store.notify import SCHEDULED, Notifier
from tests.helpers import eventually
from tests.unit.test_store import make_function

START = datetime(2026, 1, 5, 12, 0, 0, 250_000, tzinfo=UTC)
SECOND = timedelta(seconds=1)


class Clock:
    """The time the scheduler and the job service see; tests move it."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, when: datetime) -> None:
        self.now = when


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> ExecutionEvents:
    return ExecutionEvents()


def builder(store: Store) -> ExecutionBuilder:
    return ExecutionBuilder(TargetResolver(store), max_input_size=1 << 20, node_id="n1")


def scheduler(store: Store, events: ExecutionEvents, clock: Clock) -> Scheduler:
    return Scheduler(store, builder(store), events, clock=clock)


@pytest.fixture
def jobs(store: Store, events: ExecutionEvents, clock: Clock) -> JobService:
    return JobService(store, builder(store), events, clock=clock)


async def job_executions(store: Store, job: Job) -> list[Execution]:
    query = ExecutionQuery(
        project_id="default",
        filters=(Filter("job_id", "eq", job.id),),
        sort=(("created_at", "asc"),),
    )
    return await store.executions.list(query)


async def test_a_tick_fires_one_queued_execution_at_its_time(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    await make_function(store)
    job = await jobs.create(
        "default",
        JobFields(
            name="every ten",
            function="hello",
            pattern="* * * * * */10",
            function_input={"n": 1},
            count=5,
        ),
    )
    tick = datetime(2026, 1, 5, 12, 0, 10, tzinfo=UTC)
    assert job.next_execution_time == tick
    assert job.function_input == {"n": 1}
    pass_ = scheduler(store, events, clock)

    assert await pass_.run_due() == (tick, False)  # not yet: it says when
    assert await job_executions(store, job) == []

    clock.at(tick + timedelta(milliseconds=3))
    events.queued.clear()
    due, progressed = await pass_.run_due()
    assert progressed and due == tick + 10 * SECOND
    assert events.queued.is_set()  # the dispatchers are woken
    [execution] = await job_executions(store, job)
    assert execution.id == tick_execution_id(job.id, tick)
    assert (execution.status, execution.source, execution.sync) == (
        ExecutionStatus.QUEUED,
        ExecutionSource.JOB,
        False,
    )
    assert (execution.job_id, execution.function_name, execution.input) == (
        job.id,
        "hello",
        {"n": 1},
    )
    fired = await jobs.get("default", job.id)
    assert fired.next_execution_time == tick + 10 * SECOND
    assert (fired.count, fired.status, fired.skipped) == (4, JobStatus.RUNNING, 0)
    assert (fired.last_execution_id, fired.last_execution_status) == (
        execution.id,
        ExecutionStatus.QUEUED,
    )

    # The same tick again (a late node): nothing more.
    assert await pass_.fire(job, clock()) == (False, False)
    assert len(await job_executions(store, job)) == 1


async def test_many_nodes_fire_a_tick_once(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    await make_function(store)
    job = await jobs.create("default", JobFields(function="hello", pattern="* * * * * *"))
    clock.at(job.next_execution_time + 2 * SECOND)  # type: ignore[operator]
    nodes = [scheduler(store, events, clock) for _ in range(5)]
    await asyncio.gather(*(node.run_due() for node in nodes))
    assert len(await job_executions(store, job)) == 1


async def test_a_tick_is_skipped_while_the_last_execution_has_not_ended(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    await make_function(store)
    job = await jobs.create("default", JobFields(function="hello", pattern="* * * * * *"))
    pass_ = scheduler(store, events, clock)
    first = job.next_execution_time
    assert first is not None
    clock.at(first)
    await pass_.run_due()
    clock.at(first + SECOND)
    await pass_.run_due()  # the first execution is still queued: skipped
    skipping = await jobs.get("default", job.id)
    assert (skipping.skipped, skipping.next_execution_time) == (1, first + 2 * SECOND)
    [execution] = await job_executions(store, job)
    assert await store.executions.cancel_queued("default", execution.id)

    clock.at(first + 2 * SECOND)
    await pass_.run_due()
    assert len(await job_executions(store, job)) == 2
    assert (await jobs.get("default", job.id)).skipped == 1


async def test_missed_ticks_fire_once_then_the_pattern_goes_on_from_now(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    await make_function(store)
    job = await jobs.create("default", JobFields(function="hello", pattern="* * * * *"))
    clock.at(START + timedelta(hours=3, seconds=30))  # no node ran for three hours
    await scheduler(store, events, clock).run_due()
    [execution] = await job_executions(store, job)
    assert execution.id == tick_execution_id(job.id, datetime(2026, 1, 5, 12, 1, tzinfo=UTC))
    after = await jobs.get("default", job.id)
    assert after.next_execution_time == datetime(2026, 1, 5, 15, 1, tzinfo=UTC)
    # 12:01 fired (late); 12:02 to 15:00 passed with it: fired + skipped = the ticks passed.
    assert after.skipped == 179


async def test_a_job_is_done_after_its_count(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    await make_function(store)
    job = await jobs.create(
        "default", JobFields(function="hello", pattern="* * * * * */5", count=2)
    )
    pass_ = scheduler(store, events, clock)
    for _ in range(2):
        due = (await jobs.get("default", job.id)).next_execution_time
        assert due is not None
        clock.at(due)
        await pass_.run_due()
        for execution in await job_executions(store, job):
            await store.executions.cancel_queued("default", execution.id)  # ended
    done = await jobs.get("default", job.id)
    assert (done.status, done.count, done.next_execution_time) == (JobStatus.DONE, 0, None)
    assert len(await job_executions(store, job)) == 2
    assert await pass_.run_due() == (None, False)  # nothing waits: it sleeps its longest


async def test_a_job_without_a_pattern_runs_once_at_its_first_time(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    await make_function(store)
    first = START + 5 * SECOND
    job = await jobs.create("default", JobFields(function="hello", first_execution_time=first))
    assert (job.count, job.next_execution_time) == (1, first)
    clock.at(first)
    await scheduler(store, events, clock).run_due()
    assert len(await job_executions(store, job)) == 1
    assert (await jobs.get("default", job.id)).status is JobStatus.DONE


async def test_pause_resume_cancel_and_retime(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    await make_function(store)
    job = await jobs.create("default", JobFields(function="hello", pattern="*/5 * * * *"))
    events.scheduled.clear()
    paused = await jobs.update("default", job.id, JobFields(status=JobStatus.PAUSED))
    assert paused.status is JobStatus.PAUSED
    assert events.scheduled.is_set()  # the scheduler looks at its next due time again
    clock.at(START + timedelta(minutes=20))
    await scheduler(store, events, clock).run_due()
    assert await job_executions(store, job) == []  # a paused job fires nothing

    resumed = await jobs.update("default", job.id, JobFields(status=JobStatus.RUNNING))
    # Its next tick had passed: it is the pattern's next from now (no burst for the pause).
    assert resumed.next_execution_time == datetime(2026, 1, 5, 12, 25, tzinfo=UTC)
    retimed = await jobs.update(
        "default", job.id, JobFields(next_execution_time=START + timedelta(hours=1))
    )
    assert retimed.next_execution_time == START + timedelta(hours=1)
    repatterned = await jobs.update("default", job.id, JobFields(pattern="0 * * * *"))
    assert repatterned.next_execution_time == datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    # Nulls (what the Qinling client sends for what was not given) change nothing.
    assert await jobs.update("default", job.id, JobFields()) == repatterned

    cancelled = await jobs.update("default", job.id, JobFields(status=JobStatus.CANCELLED))
    assert (cancelled.status, cancelled.next_execution_time) == (JobStatus.CANCELLED, None)
    with pytest.raises(Conflict):
        await jobs.update("default", job.id, JobFields(status=JobStatus.RUNNING))
    with pytest.raises(ValidationFailed, match="done"):
        await jobs.update("default", job.id, JobFields(status=JobStatus.DONE))
    await jobs.delete("default", job.id)
    with pytest.raises(NotFound):
        await jobs.get("default", job.id)


async def test_ticks_follow_the_jobs_time_zone(
    store: Store, jobs: JobService, clock: Clock
) -> None:
    await make_function(store)
    job = await jobs.create(
        "default", JobFields(function="hello", pattern="0 2 * * *", timezone="Europe/Paris")
    )
    assert job.next_execution_time == datetime(2026, 1, 6, 1, 0, tzinfo=UTC)  # 2 am, UTC+1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (JobFields(function="hello", pattern="every day"), "not a cron pattern"),
        (JobFields(function="hello", pattern="* * * * * * *"), "not a cron pattern"),
        (JobFields(function="hello", pattern="0 0 31 2 *"), "no next tick"),
        (JobFields(function="hello", pattern="* * * * *", timezone="Mars/Base"), "timezone"),
        (JobFields(function="hello"), "pattern"),
        (JobFields(pattern="* * * * *"), "function_id"),
        (JobFields(function="hello", pattern="* * * * *", count=0), "count"),
        (JobFields(function="hello", first_execution_time=START, count=3), "runs once"),
        (
            JobFields(function="hello", first_execution_time=START - timedelta(hours=1)),
            "has passed",
        ),
    ],
)
async def test_bad_jobs_are_refused(
    store: Store, jobs: JobService, fields: JobFields, message: str
) -> None:
    await make_function(store)
    with pytest.raises(ValidationFailed, match=message):
        await jobs.create("default", fields)


async def test_jobs_belong_to_their_project(store: Store, jobs: JobService) -> None:
    await make_function(store)
    job = await jobs.create("default", JobFields(function="hello", pattern="* * * * *"))
    await store.projects.ensure("other", "other")
    with pytest.raises(NotFound):
        await jobs.get("other", job.id)
    with pytest.raises(NotFound):
        await jobs.delete("other", job.id)
    assert await jobs.list("other") == []
    assert [j.id for j in await jobs.list("default")] == [job.id]
    with pytest.raises(NotFound):  # another project's function is not found either
        await jobs.create("other", JobFields(function="hello", pattern="* * * * *"))


async def test_a_job_of_a_deleted_function_skips_its_ticks(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    function = await make_function(store)
    job = await jobs.create("default", JobFields(function="hello", pattern="* * * * * *"))
    await store.functions.delete(function)
    clock.at(job.next_execution_time)  # type: ignore[arg-type]
    await scheduler(store, events, clock).run_due()
    assert await job_executions(store, job) == []
    assert (await jobs.get("default", job.id)).skipped == 1


async def test_scheduled_executions_are_queued_once_at_their_time(
    store: Store, events: ExecutionEvents, clock: Clock
) -> None:
    function = await make_function(store)
    when = START + 30 * SECOND
    execution = Execution(
        id=str(uuid.uuid4()),
        function_id=function.id,
        function_name=function.name,
        status=ExecutionStatus.SCHEDULED,
        sync=False,
        scheduled_at=when,
    )
    await store.executions.create(execution)
    assert await store.executions.next_scheduled() == when
    nodes = [scheduler(store, events, clock) for _ in range(3)]
    assert await nodes[0].run_due() == (when, False)
    assert (await store.executions.get("default", execution.id)).status is (
        ExecutionStatus.SCHEDULED
    )
    clock.at(when)
    await asyncio.gather(*(node.run_due() for node in nodes))
    queued = await store.executions.get("default", execution.id)
    assert (queued.status, queued.scheduled_at) == (ExecutionStatus.QUEUED, when)
    assert await store.executions.next_scheduled() is None
    assert await store.executions.queue_scheduled(when + SECOND) == 0


async def test_a_scheduled_execution_can_be_cancelled_before_its_time(
    store: Store, events: ExecutionEvents, clock: Clock
) -> None:
    function = await make_function(store)
    execution = Execution(
        id=str(uuid.uuid4()),
        function_id=function.id,
        function_name=function.name,
        status=ExecutionStatus.SCHEDULED,
        sync=False,
        scheduled_at=START + SECOND,
    )
    await store.executions.create(execution)
    assert await store.executions.cancel_queued("default", execution.id)
    clock.at(START + timedelta(minutes=1))
    await scheduler(store, events, clock).run_due()
    cancelled = await store.executions.get("default", execution.id)
    assert cancelled.status is ExecutionStatus.CANCELLED


async def test_the_scheduler_wakes_when_a_job_is_made_not_at_its_longest_sleep(
    store: Store, jobs: JobService, events: ExecutionEvents, clock: Clock
) -> None:
    await make_function(store)
    running = scheduler(store, events, clock)
    running.max_sleep = 3600.0  # nothing is due: it would sleep that long
    running.start()
    try:
        await asyncio.sleep(0)  # it made its first pass, found nothing, and sleeps
        job = await jobs.create("default", JobFields(function="hello", first_execution_time=START))

        async def fired() -> bool:
            return len(await job_executions(store, job)) == 1

        await eventually(fired, within=30)
    finally:
        await running.stop()


@pytest.mark.postgres
async def test_other_nodes_hear_that_a_job_changed(fresh_postgres: str) -> None:
    sender, listener = Notifier(fresh_postgres), Notifier(fresh_postgres)
    here, there = ExecutionEvents(relay=sender.send), ExecutionEvents()
    listener.on(SCHEDULED, there.heard_scheduled)
    await sender.start(lambda: None, lambda _id: None)
    await listener.start(lambda: None, lambda _id: None)
    try:
        here.announce_scheduled()
        assert here.scheduled.is_set()
        async with asyncio.timeout(30):
            await there.scheduled.wait()
    finally:
        await here.drain()
        await sender.stop()
        await listener.stop()


async def test_a_tick_is_fired_whole_or_not_at_all(
    store: Store, jobs: JobService, clock: Clock
) -> None:
    """The job moves on only with its tick's execution: when the insert fails (here: a project
    that does not exist), the job still waits at that tick, as after a kill before the commit."""
    function = await make_function(store)
    job = await jobs.create("default", JobFields(function="hello", pattern="* * * * * *"))
    tick = job.next_execution_time
    assert tick is not None
    doomed = Execution(
        id=tick_execution_id(job.id, tick),
        function_id=function.id,
        function_name=function.name,
        sync=False,
        job_id=job.id,
        project_id="no-such-project",
    )
    moved = job.evolve(next_execution_time=tick + SECOND, last_execution_id=doomed.id)
    with pytest.raises(IntegrityError):
        await store.jobs.fire(job, moved, doomed)
    assert (await jobs.get("default", job.id)).next_execution_time == tick
    assert await store.executions.find("no-such-project", doomed.id) is None
    # Fired again (by this node or another), it fires once.
    clock.at(tick)
    events = ExecutionEvents()
    await scheduler(store, events, clock).run_due()
    [execution] = await job_executions(store, job)
    assert execution.id == doomed.id
