"""Running one execution to its end: backend, limits, recording, cancellation.

Each execution's output goes to a `LogSpool` of its own while it runs (a little memory, then a
temporary file, capped), so that whatever it wrote is recorded however it ends: a timeout, a
crash, and a cancel too, which also keeps how long it ran, how it started and on which image.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from spinlet.domain import (
    Execution,
    ExecutionError,
    ExecutionStatus,
    FunctionStatus,
    StatusReason,
    utcnow,
)
from spinlet.errors import (
    FunctionNotReady,
    ImageMissing,
    InvalidPackage,
    LayerBuildFailed,
    NotFound,
    RuntimeBackendError,
    RuntimeProtocolMismatch,
    StoreUnavailable,
)
from spinlet.livelogs import LiveLog, LiveLogs
from spinlet.logspool import LogSpool, text_of
from spinlet.metrics import Metrics
from spinlet.packages import PackageStore
from spinlet.runtime.backend import (
    OutcomeStatus,
    RunOutcome,
    RunRequest,
    RuntimeBackend,
    attached_outcome,
)
from spinlet.services.events import ExecutionEvents
from spinlet.services.layers import LayerService
from spinlet.services.runtime_builds import RuntimeBuilds
from spinlet.services.targets import Target, TargetResolver
from spinlet.settings import Settings
from spinlet.store import Store

log = logging.getLogger(__name__)

#: Pauses between attempts to record an execution's end while the database is unreachable.
RECORD_PAUSE_FIRST = 0.2
RECORD_PAUSE_MAX = 5.0

#: Why a running execution is being stopped: a user's cancel, or the node going away.
StopReason = Literal["cancel", "kill", "lost"]

_OUTCOME_STATUS = {outcome: ExecutionStatus(outcome.value) for outcome in OutcomeStatus}

#: How an execution stopped by a user (`cancel`, `kill`) ends: cancelled, not failed.
CANCELLED = RunOutcome(status=OutcomeStatus.CANCELLED, status_reason=StatusReason.CANCELLED)


def platform_error(reason: StatusReason, message: str) -> RunOutcome:
    """The outcome of an execution the platform could not run to its end (an `error`)."""
    return RunOutcome(
        status=OutcomeStatus.ERROR,
        status_reason=reason,
        error=ExecutionError.of(reason, message),
    )


class ExecutionRunner:
    """Runs executions that are already `running` in the store, and records how they end."""

    def __init__(
        self,
        store: Store,
        package_store: PackageStore,
        backend: RuntimeBackend,
        targets: TargetResolver,
        events: ExecutionEvents,
        settings: Settings,
        layers: LayerService,
        metrics: Metrics | None = None,
        live: LiveLogs | None = None,
        *,
        builds: RuntimeBuilds,
    ) -> None:
        self.store = store
        self.builds = builds
        #: The logs of the executions running here, for their followers.
        self.live = live if live is not None else LiveLogs()
        self.package_store = package_store
        self.backend = backend
        self.targets = targets
        self.layers = layers
        self.events = events
        self.settings = settings
        self.metrics = metrics
        self._tasks: dict[str, asyncio.Task[RunOutcome]] = {}
        self._stopping: dict[str, StopReason] = {}
        #: What the backend knew of a run it was stopped in (its logs, duration, start).
        self._stopped: dict[str, RunOutcome] = {}

    def is_running(self, execution_id: str) -> bool:
        return execution_id in self._tasks

    async def run(self, execution: Execution, target: Target | None = None) -> Execution:
        """Run a `running` execution to its end; the returned record is final and committed.

        `target` is what the execution runs, when the caller has just resolved it.
        """
        with (
            LogSpool(self.settings.log_limit) as spool,
            self.live.open(execution.id, spool) as sink,
        ):
            return await self._run(execution, target, sink)

    async def _run(self, execution: Execution, target: Target | None, spool: LiveLog) -> Execution:
        task = asyncio.create_task(
            self._outcome(execution, target, spool), name=f"execution {execution.id}"
        )
        self._tasks[execution.id] = task
        try:
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is None or not current.cancelling():
                outcome = await self._settle(execution.id, task)  # stopped by cancel/stop
                return await self._finish(execution, outcome, spool)
            # Our caller is being cancelled (shutdown): the execution is lost.
            self.stop(execution.id, "lost")
            await self._finish(execution, await self._settle(execution.id, task), spool)
            raise
        except Exception:
            outcome = await self._settle(execution.id, task)
        else:
            self._tasks.pop(execution.id, None)
        return await self._finish(execution, outcome, spool)

    async def _settle(self, execution_id: str, task: asyncio.Task[RunOutcome]) -> RunOutcome:
        """The outcome of a task that was stopped (or failed unexpectedly)."""
        try:
            return await task
        except asyncio.CancelledError:
            reason = self._stopping.get(execution_id, "lost")
            if reason == "lost":
                outcome = platform_error(StatusReason.LOST, "the node stopped while it was running")
            else:
                outcome = CANCELLED
            if (ran := self._stopped.get(execution_id)) is not None:
                outcome = dataclasses.replace(
                    outcome,
                    duration_ms=ran.duration_ms,
                    start_kind=ran.start_kind,
                    init_ms=ran.init_ms,
                    image_id=ran.image_id,
                    container_id=ran.container_id,
                )
            return outcome
        except Exception:
            log.exception("execution %s failed in the platform", execution_id)
            return platform_error(StatusReason.INTERNAL, "internal error")
        finally:
            self._tasks.pop(execution_id, None)
            self._stopped.pop(execution_id, None)

    def stop(self, execution_id: str, reason: StopReason) -> bool:
        """Stop a running execution now (its container is destroyed)."""
        task = self._tasks.get(execution_id)
        if task is None or task.done():
            return False
        self._stopping.setdefault(execution_id, reason)
        task.cancel()
        return True

    async def cancel(self, execution_id: str, *, kill: bool, grace: float) -> bool:
        """Cancel: at once with `kill`, else after letting it finish for up to `grace` s."""
        task = self._tasks.get(execution_id)
        if task is None:
            return False
        if not kill:
            done, _ = await asyncio.wait({task}, timeout=grace)
            if done:
                return True  # it finished on its own within the grace period
        self.stop(execution_id, "kill" if kill else "cancel")
        await asyncio.wait({task})
        return True

    async def stop_all(self, reason: StopReason) -> None:
        tasks = list(self._tasks.values())
        for execution_id in list(self._tasks):
            self.stop(execution_id, reason)
        if tasks:
            await asyncio.wait(tasks)

    @property
    def running(self) -> int:
        return len(self._tasks)

    def refused(self) -> None:
        """Count an execution refused for a concurrency limit (429)."""
        if self.metrics is not None:
            self.metrics.refused()

    async def warm_functions(self) -> set[str]:
        """The functions with an idle container on this node (they start fastest here)."""
        return {
            c.function_id
            for c in await self.backend.containers()
            if c.state == "idle" and c.function_id is not None
        }

    async def _outcome(
        self, execution: Execution, target: Target | None, spool: LiveLog
    ) -> RunOutcome:
        if target is None:
            try:
                target = await self.targets.target(
                    execution.project_id, execution.function_id, execution.function_version
                )
            except NotFound as exc:
                return platform_error(StatusReason.NOT_FOUND, exc.message)
            except FunctionNotReady as exc:
                return platform_error(StatusReason.DEPENDENCIES, exc.message)
        try:
            # A shipped runtime not built on this node yet: its build runs first (the
            # execution's timeout counts from the run, not from the build).
            await self.builds.wait(target.image)
        except ImageMissing as exc:
            return platform_error(StatusReason.NO_IMAGE, exc.message)
        if target.status is FunctionStatus.BUILDING:
            try:
                target = await self._when_built(target)
            except NotFound as exc:
                return platform_error(StatusReason.NOT_FOUND, exc.message)
            except LayerBuildFailed as exc:
                message = f"its dependencies failed to build: {exc.message}"
                return platform_error(StatusReason.DEPENDENCIES, message)
            except TimeoutError:
                message = (
                    f"its dependencies were still being built after {target.timeout:g} s "
                    "(its timeout); it did not start"
                )
                return platform_error(StatusReason.DEPENDENCIES, message)
        package = target.package

        async def load_code() -> bytes:
            return await self.package_store.get(package.sha256)

        load_layer: Callable[[], Awaitable[Path]] | None = None
        if (layer_id := target.layer_id) is not None:

            async def load_layer() -> Path:
                return await self.layers.local(layer_id)

        request = RunRequest(execution_id=execution.id, input=execution.input)
        try:
            return await self.backend.execute(
                target.spec(), load_code, request, load_layer, log=spool
            )
        except asyncio.CancelledError as exc:
            if (ran := attached_outcome(exc)) is not None:
                self._stopped[execution.id] = ran
            raise
        except InvalidPackage as exc:
            return platform_error(StatusReason.NO_PACKAGE, exc.message)
        except ImageMissing as exc:
            self.builds.forget(target.image)
            return platform_error(StatusReason.NO_IMAGE, exc.message)
        except RuntimeProtocolMismatch as exc:
            return platform_error(StatusReason.PROTOCOL_MISMATCH, exc.message)
        except RuntimeBackendError as exc:
            return platform_error(StatusReason.BACKEND, exc.message)

    async def _when_built(self, target: Target) -> Target:
        """The target again once its function's layer is built, within its timeout."""
        await self.layers.wait_ready(target.project_id, target.function_id, target.timeout)
        built = await self.targets.target(target.project_id, target.function_id, 0)
        return dataclasses.replace(built, alias=target.alias)

    async def _record_end(self, finished: Execution, logs: str) -> Execution:
        """Commit the end of an execution and return the record as stored. While the database
        cannot be reached the outcome is kept and the commit tried again, with pauses growing
        to `RECORD_PAUSE_MAX`; an end the store refuses (a bug) is recorded as an internal
        error without its output."""
        pause = RECORD_PAUSE_FIRST
        while True:
            try:
                if await self.store.executions.finish(finished, logs=logs):
                    return finished
                log.warning(
                    "execution %s ended here, but another node had recovered it already; "
                    "its end there stands",
                    finished.id,
                )
                stored = await self.store.executions.find(finished.project_id, finished.id)
                return stored or finished
            except StoreUnavailable:
                log.warning(
                    "execution %s ended; recording it again in %g s, once the database is back",
                    finished.id,
                    pause,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECORD_PAUSE_MAX)
            except Exception:
                if finished.status_reason is StatusReason.INTERNAL:
                    raise
                log.exception("execution %s: the store refused its end", finished.id)
                finished = finished.evolve(
                    status=ExecutionStatus.ERROR,
                    status_reason=StatusReason.INTERNAL,
                    result=None,
                    error=ExecutionError.of(
                        StatusReason.INTERNAL,
                        "the execution ended, but its outcome could not be recorded",
                    ),
                )
                logs = ""

    async def _finish(self, execution: Execution, outcome: RunOutcome, spool: LiveLog) -> Execution:
        """Record how the execution ended, with the log its spool holds (all of its output
        however it ended, capped)."""
        status = _OUTCOME_STATUS[outcome.status]
        reason, result, error = outcome.status_reason, outcome.result, outcome.error
        self._stopping.pop(execution.id, None)
        if status is ExecutionStatus.SUCCESS:
            size = len(json.dumps(result, separators=(",", ":")).encode())
            if size > self.settings.max_result_size:
                reason, result = StatusReason.RESULT_TOO_LARGE, None
                status = reason.status
                limit = self.settings.max_result_size
                message = f"the result is {size} bytes; the limit is {limit}"
                error = ExecutionError.of(reason, message)
        now = utcnow()
        finished = execution.evolve(
            status=status,
            status_reason=reason,
            result=result,
            error=error,
            duration_ms=outcome.duration_ms,
            start_kind=outcome.start_kind if outcome.image_id else None,
            init_ms=outcome.init_ms,
            image_id=outcome.image_id,
            container_id=outcome.container_id,
            finished_at=now,
            updated_at=now,
        )
        saved = await self._record_end(finished, await text_of(spool.spool))
        self.events.announce_finished(execution.id)
        if self.metrics is not None:
            self.metrics.finished(saved)
        return saved
