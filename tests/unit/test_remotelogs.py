"""Following a log on another node of a fleet: what a follower gets when a notification is lost.

The two nodes' `RemoteLogs` talk through a bus standing in for PostgreSQL's NOTIFY (each node
hears every notification, its own too) that loses the notifications the test says: a lost
notification cannot be provoked in a real fleet without timers, the order of events here is
exact. The store is real (SQLite and PostgreSQL).
"""

from __future__ import annotations

import uuid

import pytest

from spinlet.domain import Execution, ExecutionStatus
from spinlet.livelogs import Chunk, LiveLogs
from spinlet.logspool import LogSpool
from spinlet.services.follow import LogFollowing
from spinlet.services.remotelogs import LOG, RemoteLogs
from spinlet.store import Store
from tests.unit.test_store import make_function


class Bus:
    """NOTIFY between nodes, losing the next `lose` log notifications."""

    def __init__(self) -> None:
        self.nodes: list[RemoteLogs] = []
        self.lose = 0

    async def send(self, channel: str, payload: str) -> None:
        if channel == LOG and self.lose:
            self.lose -= 1
            return
        for node in self.nodes:
            (node.heard_log if channel == LOG else node.heard_follow)(payload)


async def test_a_remote_follower_that_sees_a_gap_is_dropped_and_resumes_from_its_offset(
    store: Store,
) -> None:
    function = await make_function(store)
    execution = await store.executions.create(
        Execution(
            id=str(uuid.uuid4()),
            function_id=function.id,
            function_name=function.name,
            status=ExecutionStatus.RUNNING,
            node_id="runner",
        )
    )
    bus = Bus()
    runner_logs, follower_logs = LiveLogs(), LiveLogs()
    runner = RemoteLogs(bus.send, runner_logs, store)
    follower = RemoteLogs(bus.send, follower_logs, store)
    bus.nodes += [runner, follower]
    following = LogFollowing(store, follower_logs, follower)

    with LogSpool(1024 * 1024) as spool, runner_logs.open(execution.id, spool) as sink:
        sink.write("stdout", "first\n", 1.0)
        pieces = following.follow(execution)
        assert await anext(pieces) == Chunk(0, b"first\n")  # the runner's snapshot
        sink.write("stdout", "second\n", 2.0)
        assert await anext(pieces) == Chunk(6, b"second\n", "stdout", 2.0)  # live
        bus.lose = 1
        sink.write("stdout", "lost\n", 3.0)
        sink.write("stdout", "third\n", 4.0)
        # The next chunk starts past what it has: it is let go, and its log ends there,
        # without the record (an SSE response ends without its `end` event).
        with pytest.raises(StopAsyncIteration):
            await anext(pieces)

        # Following again from the offset it reached (Last-Event-ID) gets exactly the rest.
        resumed = following.follow(execution, after=13)
        assert await anext(resumed) == Chunk(13, b"lost\nthird\n")
        # A notification lost at the very end: no later chunk shows the gap while it runs.
        bus.lose = 1
        sink.write("stdout", "last\n", 5.0)
        ended = execution.evolve(status=ExecutionStatus.SUCCESS)
        assert await store.executions.finish(ended, logs=sink.text())
    follower.ended(execution.id)  # what the `spinlet_finished` notification does there
    rest = [piece async for piece in resumed]
    # The stored log completes what it lacked, then the final record ends it.
    assert rest[0] == Chunk(24, b"last\n")
    assert isinstance(rest[1], Execution) and rest[1].status is ExecutionStatus.SUCCESS
    assert len(rest) == 2
