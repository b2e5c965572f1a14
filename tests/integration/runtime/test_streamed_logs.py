"""Runtime protocol v2 on the node's side: output streamed from `/run` reaches the execution's log
as it is written, so that what a function wrote before a timeout or a cancel is kept.

The runtime here is `fake_v2_server.py`, which sends what each run's input scripts and can wait
for the test (a FIFO) or block forever: every claim is checked by the order of events.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.logspool import LogSpool
from spinlet.runtime import process_driver
from spinlet.runtime.backend import (
    OutcomeStatus,
    RunOutcome,
    RunRequest,
    StartKind,
    attached_outcome,
)
from spinlet.runtime.pool import PoolBackend
from spinlet.runtime.process_driver import ProcessDriver
from spinlet.services import runner
from spinlet.settings import Settings
from tests.helpers import make_package
from tests.integration.runtime import fake_v2_server
from tests.integration.runtime.backends import COUNTER, Target

FAKE_SERVER = Path(fake_v2_server.__file__)
LINES = [["stdout", "line 1\n"], ["stderr", "line 2\n"], ["stdout", "line 3 ✓\n"]]
INIT = fake_v2_server.INIT_LOGS


class Recorder(LogSpool):
    """A `LogSpool` that also notes what it is given, and says when it got `awaited`."""

    def __init__(self, limit: int = 1024 * 1024, awaited: str = "") -> None:
        super().__init__(limit)
        self.writes: list[tuple[str, str]] = []
        self.awaited = awaited
        self.got = asyncio.Event()

    def write(self, stream: str, data: str, t: float) -> None:
        super().write(stream, data, t)
        self.writes.append((stream, data))
        if self.awaited and self.awaited in data:
            self.got.set()


@pytest.fixture
async def v2(socket_root: Path) -> AsyncIterator[tuple[Target, PoolBackend]]:
    target = Target("process", f"test-{uuid.uuid4().hex[:8]}", socket_root, "python3")
    driver = ProcessDriver(socket_root, node_id=target.node_id)
    driver.server = FAKE_SERVER
    backend = PoolBackend(driver, stem_cells=0)
    await backend.open()
    yield target, backend
    await backend.close()
    assert await target.leftovers() == []


def start(
    backend: PoolBackend, target: Target, script: dict[str, Any], log: LogSpool, **spec: Any
) -> asyncio.Task[RunOutcome]:
    """`execute` in a task; a cancellation's outcome (`attached_outcome`) goes to `stopped`."""
    fn, package = target.spec(COUNTER, **spec)

    async def load_code() -> bytes:
        return package

    async def run() -> RunOutcome:
        request = RunRequest(execution_id=str(uuid.uuid4()), input=script)
        try:
            return await backend.execute(fn, load_code, request, log=log)
        except asyncio.CancelledError as exc:
            stopped.append(attached_outcome(exc))
            raise

    stopped: list[RunOutcome | None] = []
    task = asyncio.create_task(run())
    task.stopped = stopped  # type: ignore[attr-defined]
    return task


async def stuck_after_lines(
    backend: PoolBackend, target: Target
) -> tuple[asyncio.Task[RunOutcome], Recorder]:
    """An execution that wrote `LINES`, which reached its log, and now never ends."""
    log = Recorder(awaited="line 3")
    task = start(backend, target, {"frames": LINES, "end": "block"}, log)
    async with asyncio.timeout(30):
        await log.got.wait()
    return task, log


async def open_gate(fifo: Path) -> None:
    """Let the fake runtime go on (it waits in `open` for this end)."""

    def opened() -> None:
        with fifo.open("wb"):
            pass

    await asyncio.to_thread(opened)


async def test_a_log_frame_reaches_the_log_before_the_execution_ends(
    v2: tuple[Target, PoolBackend], tmp_path: Path
) -> None:
    target, backend = v2
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    log = Recorder(awaited="line 3")
    script = {"frames": LINES, "gate": str(gate), "after": [["stdout", "last\n"]], "result": 7}
    task = start(backend, target, script, log)
    async with asyncio.timeout(30):
        await log.got.wait()
    # The runtime cannot end the run before the gate opens, which happens only now.
    assert not task.done()
    assert log.text() == INIT + "line 1\nline 2\nline 3 ✓\n"
    await open_gate(gate)
    outcome = await task
    assert (outcome.status, outcome.result) == (OutcomeStatus.SUCCESS, 7)
    assert log.writes == [("stdout", INIT), *map(tuple, LINES), ("stdout", "last\n")]
    assert outcome.logs == INIT + "line 1\nline 2\nline 3 ✓\nlast\n"


async def test_lines_written_before_a_timeout_are_in_its_outcome(
    v2: tuple[Target, PoolBackend],
) -> None:
    target, backend = v2
    log = Recorder()
    outcome = await start(backend, target, {"frames": LINES, "end": "block"}, log, timeout=1.0)
    assert (outcome.status, outcome.status_reason) == (OutcomeStatus.FAILED, "timeout")
    assert outcome.logs == INIT + "line 1\nline 2\nline 3 ✓\n"
    assert outcome.start_kind is StartKind.COLD and outcome.image_id is not None
    assert outcome.duration_ms > 0


async def test_lines_written_before_a_cancel_are_carried_by_the_cancellation(
    v2: tuple[Target, PoolBackend],
) -> None:
    target, backend = v2
    task, log = await stuck_after_lines(backend, target)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [stopped] = task.stopped  # type: ignore[attr-defined]
    assert stopped is not None
    assert stopped.logs == INIT + "line 1\nline 2\nline 3 ✓\n" == log.text()
    assert stopped.start_kind is StartKind.COLD and stopped.image_id is not None
    assert stopped.duration_ms > 0
    assert await target.leftovers() == []  # its sandbox was destroyed


async def test_a_traceback_frame_ends_the_log_of_a_failed_run(
    v2: tuple[Target, PoolBackend],
) -> None:
    target, backend = v2
    log = Recorder()
    outcome = await start(backend, target, {"frames": LINES[:1], "end": "error"}, log)
    assert (outcome.status, outcome.error and outcome.error.type) == (
        OutcomeStatus.FAILED,
        "ValueError",
    )
    assert outcome.logs.endswith("line 1\nTraceback (most recent call last):\nValueError: boom\n")
    assert log.writes[-1][0] == "stderr"


async def test_a_runtime_of_protocol_v1_still_sends_the_whole_log_with_its_reply(
    v2: tuple[Target, PoolBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that offers only v1 (as an old node does) gets the v1 answer from a v2 runtime."""
    from spinlet.runtime import protocol

    init = protocol.RuntimeConnection.init

    async def offer_v1(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await init(self, *args, **kwargs, protocol=1)

    monkeypatch.setattr(protocol.RuntimeConnection, "init", offer_v1)
    target, backend = v2
    log = Recorder()
    outcome = await start(backend, target, {"frames": LINES, "result": 1}, log)
    assert (outcome.status, outcome.result) == (OutcomeStatus.SUCCESS, 1)
    assert outcome.logs == INIT + "line 1\nline 2\nline 3 ✓\n"
    assert log.writes == [("stdout", INIT), ("stdout", "line 1\nline 2\nline 3 ✓\n")]


async def test_the_records_of_a_cancelled_and_a_timed_out_execution_keep_log_and_start(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "python").mkdir()
    shutil.copy(FAKE_SERVER, tmp_path / "python" / "server.py")
    monkeypatch.setattr(process_driver, "runtimes_dir", lambda: tmp_path)
    seen = asyncio.Event()

    def spool(limit: int) -> Recorder:
        recorder = Recorder(limit, awaited="line 3")
        recorder.got = seen
        return recorder

    monkeypatch.setattr(runner, "LogSpool", spool)
    api = await aiohttp_client(create_app(settings.evolve(backend="process")))
    upload = aiohttp.FormData({"name": "talks"})
    upload.add_field("package", make_package(COUNTER), filename="talks.zip")
    assert (await api.post("/v1/functions", data=upload)).status == 201

    script = {"frames": LINES, "end": "block"}
    body = {"function_id": "talks", "input": script, "sync": False}
    record = await (await api.post("/v1/executions", json=body)).json()
    async with asyncio.timeout(30):
        await seen.wait()  # what it wrote reached the node: cancel it now
    response = await api.post(f"/v1/executions/{record['id']}/cancel", json={"kill": True})
    assert response.status == 200
    cancelled = await (await api.get(f"/v1/executions/{record['id']}")).json()
    assert cancelled["status"] == "cancelled" and cancelled["start_kind"] in ("cold", "stem")
    assert cancelled["duration_ms"] > 0 and cancelled["image_id"]
    log = await (await api.get(f"/v1/executions/{record['id']}/log")).text()
    assert log == INIT + "line 1\nline 2\nline 3 ✓\n"

    upload = aiohttp.FormData({"name": "slow", "timeout": "1"})
    upload.add_field("package", make_package(COUNTER), filename="slow.zip")
    assert (await api.post("/v1/functions", data=upload)).status == 201
    body = {"function_id": "slow", "input": script}
    timed_out = await (await api.post("/v1/executions", json=body)).json()
    assert (timed_out["status"], timed_out["status_reason"]) == ("failed", "timeout")
    assert timed_out["start_kind"] in ("cold", "stem", "warm") and timed_out["duration_ms"] > 0
    log = await (await api.get(f"/v1/executions/{timed_out['id']}/log")).text()
    assert log == INIT + "line 1\nline 2\nline 3 ✓\n"


async def test_lines_written_before_the_container_dies_are_in_its_outcome(
    v2: tuple[Target, PoolBackend],
) -> None:
    target, backend = v2
    task, _ = await stuck_after_lines(backend, target)
    [sandbox] = await backend.containers()
    await target.kill(sandbox.id)
    outcome = await task
    assert (outcome.status, outcome.status_reason) == (OutcomeStatus.FAILED, "crashed")
    assert outcome.logs == INIT + "line 1\nline 2\nline 3 ✓\n"
    assert outcome.start_kind is StartKind.COLD and outcome.duration_ms > 0
