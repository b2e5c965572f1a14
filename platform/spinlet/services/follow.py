"""Following an execution's log: what it printed so far, what it prints next, then its end.

An execution running on this node is followed through its `LiveLog` (`livelogs.py`); one
running on another node of a PostgreSQL fleet through `RemoteLogs` (`services/remotelogs.py`),
which asks that node to publish it; one not started yet is waited for. Once it ends, whatever
the follower still lacks is read from the stored log (the record is committed before a live
log closes), so a chunk lost on the way is not lost for good.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

from spinlet.domain import Execution
from spinlet.livelogs import Chunk, Follower, LiveLogs, log_after
from spinlet.store import Store

__all__ = ["LogFollowing", "RemoteFollow"]

#: How often the record of an execution not running here is read again (seconds).
RECHECK = 1.0


class RemoteFollow(Protocol):
    """Follows executions running on other nodes (`RemoteLogs`)."""

    def follow(
        self, execution: Execution, after: int
    ) -> contextlib.AbstractAsyncContextManager[tuple[Chunk, Follower] | None]: ...


class LogFollowing:
    def __init__(
        self,
        store: Store,
        live: LiveLogs,
        remote: RemoteFollow | None = None,
        *,
        node_id: str | None = None,
    ) -> None:
        self.store = store
        self.live = live
        self.remote = remote
        self.node_id = node_id  # this node's: what it runs is followed here, never remotely

    async def follow(
        self, execution: Execution, after: int = 0
    ) -> AsyncGenerator[Chunk | Execution]:
        """The log past byte `after` as it grows, then the final record. Ends without the record
        when this follower fell too far behind and was dropped."""
        while not execution.status.is_final:
            async with self._source(execution, after) as source:
                if source is None:
                    await self.live.wait_opened(execution.id, RECHECK)
                else:
                    async for chunk in _chunks(*source):
                        after = max(after, chunk.end)
                        yield chunk
                    if source[1].dropped:
                        return
            execution = await self.store.executions.get(execution.project_id, execution.id)
        stored = await self.store.executions.logs(execution.project_id, execution.id)
        rest = log_after(stored, after)
        if rest.data and rest.end > after:
            yield rest
        yield execution

    @contextlib.asynccontextmanager
    async def _source(
        self, execution: Execution, after: int
    ) -> AsyncIterator[tuple[Chunk, Follower] | None]:
        """Its log here, or from the node running it, or None (not started, or not found).
        An execution this node runs whose log is not open yet (it is being started) is waited
        for here: asking this node through the store would be a long way round."""
        with self.live.follow(execution.id, after) as local:
            if (
                local is not None
                or self.remote is None
                or execution.node_id
                in (
                    None,
                    self.node_id,
                )
            ):
                yield local
                return
        async with self.remote.follow(execution, after) as remote:
            yield remote


async def _chunks(snapshot: Chunk, follower: Follower) -> AsyncIterator[Chunk]:
    """The snapshot, then what the follower receives, each from where the last one ended."""
    reached = snapshot.start
    if snapshot.data:
        yield snapshot
        reached = snapshot.end
    while chunks := await follower.take():
        for chunk in chunks:
            if (part := chunk.after(reached)) is not None:
                yield part
                reached = part.end
