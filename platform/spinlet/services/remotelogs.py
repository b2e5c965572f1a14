"""Following a log on another node of a PostgreSQL fleet, over NOTIFY.

Why NOTIFY and not a table or a proxy: nodes already listen to each other on PostgreSQL
(`store/notify.py`), so this needs no schema, no node addresses and no port between nodes, and
it writes nothing to the store: an execution nobody follows costs nothing (a dict lookup). Why
it is enough: a notification may be lost (a dropped connection), so every chunk carries its byte
offset; a follower that sees a gap is dropped (an SSE client resumes from its offset), and once
the execution ends the follower reads what it lacks from the stored log, which is the truth.

The follower's node sends `spinlet_follow` (execution, a request id, the offset it has), and
again every `KEEPALIVE` seconds while it follows. The node running the execution answers the
request with a snapshot (the log past that offset, as it holds it) addressed to the request id,
then publishes each write on `spinlet_log` for as long as a follow was heard within `LEASE`.
Payloads are base64 pieces of at most `PIECE` bytes (NOTIFY's payload limit is 8000 bytes), cut
at character boundaries. A node publishes through one queue of at most `BACKLOG` bytes: past it
(PostgreSQL slower than a function's output) chunks are left out, and the followers see a gap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from spinlet.domain import Execution
from spinlet.livelogs import Chunk, Follower, LiveLogs
from spinlet.store import Store

__all__ = ["FOLLOW", "LOG", "RemoteLogs"]

log = logging.getLogger(__name__)

FOLLOW = "spinlet_follow"
LOG = "spinlet_log"
#: The raw bytes of log in one notification (base64 and JSON keep it under 8000 bytes).
PIECE = 5000
#: How long a follow keeps a node publishing, and how often a follower renews it (seconds).
LEASE = 15.0
KEEPALIVE = 5.0
#: How long a follower waits for the running node's snapshot before it looks again.
SNAPSHOT_WAIT = 3.0
#: The bytes of log a node may have waiting to be published.
BACKLOG = 1024 * 1024

#: Sends `(channel, payload)` to every node.
Send = Callable[[str, str], Awaitable[None]]


def pieces(data: bytes, size: int = PIECE) -> list[bytes]:
    """`data` in parts of at most `size` bytes, none cutting a UTF-8 character."""
    parts = []
    while len(data) > size:
        cut = size
        while cut > size - 4 and data[cut] & 0xC0 == 0x80:  # a continuation byte
            cut -= 1
        parts.append(data[:cut])
        data = data[cut:]
    parts.append(data)
    return parts


class _Remote:
    """A follower on this node of an execution another node runs."""

    def __init__(self, request: str, after: int) -> None:
        self.request = request
        self.follower = Follower()
        self.snapshot = bytearray()
        self.complete = False  # the whole snapshot came: what follows is live
        self.start = after
        self.reached = after
        self.ready = asyncio.Event()


class RemoteLogs:
    """Both sides: publishes this node's live logs that others follow, follows others'."""

    def __init__(self, send: Send, live: LiveLogs, store: Store) -> None:
        self.send = send
        self.live = live
        self.store = store
        self._followers: dict[str, set[_Remote]] = {}
        self._leases: dict[str, float] = {}  # execution id: monotonic time the lease ends
        self._queue: deque[tuple[str, int]] = deque()  # payloads, and the log bytes they hold
        self._queued = 0
        self._sender: asyncio.Task[None] | None = None

    # The node running the execution.

    def heard_follow(self, payload: str) -> None:
        """Another node follows an execution: publish it, if it runs here."""
        message = json.loads(payload)
        execution_id = message["e"]
        live = self.live.get(execution_id)
        if live is None:
            return
        self._leases[execution_id] = time.monotonic() + LEASE
        live.publish = self._publish
        if (request := message.get("r")) is not None:
            self._post(execution_id, live.snapshot(int(message.get("a", 0))), request)

    def _publish(self, execution_id: str, chunk: Chunk) -> None:
        if time.monotonic() > self._leases.get(execution_id, 0.0):
            self._leases.pop(execution_id, None)
            if (live := self.live.get(execution_id)) is not None:
                live.publish = None  # nobody followed it lately
            return
        self._post(execution_id, chunk, None)

    def _post(self, execution_id: str, chunk: Chunk, request: str | None) -> None:
        if self._queued + len(chunk.data) > BACKLOG:
            return  # the followers see a gap, and are dropped
        start = chunk.start
        parts = pieces(chunk.data)
        for number, part in enumerate(parts):
            message: dict[str, Any] = {"e": execution_id, "s": start, "d": b64(part)}
            if chunk.stream is not None:
                message |= {"st": chunk.stream, "t": chunk.t}
            if request is not None:
                message |= {"r": request, "last": number == len(parts) - 1}
            self._queue.append((json.dumps(message), len(part)))
            self._queued += len(part)
            start += len(part)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all(), name="spinlet-log-publish")

    async def _send_all(self) -> None:
        while self._queue:
            payload, size = self._queue.popleft()
            self._queued -= size
            await self.send(LOG, payload)

    def ended(self, execution_id: str) -> None:
        """An execution ended (here or elsewhere): its remote followers have it all."""
        self._leases.pop(execution_id, None)
        for remote in self._followers.get(execution_id, ()):
            remote.follower.end()
            remote.ready.set()

    # The node of the follower.

    def heard_log(self, payload: str) -> None:
        message = json.loads(payload)
        remotes = self._followers.get(message["e"])
        if not remotes:
            return
        chunk = Chunk(
            message["s"], base64.b64decode(message["d"]), message.get("st"), message.get("t")
        )
        request = message.get("r")
        for remote in remotes:
            if request is not None:
                if request == remote.request and not remote.complete:
                    self._snapshot_piece(remote, chunk, bool(message.get("last")))
            elif remote.complete:
                if chunk.start > remote.reached:  # a notification was lost
                    remote.follower.drop()
                else:
                    remote.follower.push(chunk)
                remote.reached = max(remote.reached, chunk.end)

    @staticmethod
    def _snapshot_piece(remote: _Remote, chunk: Chunk, last: bool) -> None:
        if not remote.snapshot:
            remote.start = chunk.start
        remote.snapshot += chunk.data
        if last:
            remote.reached = remote.start + len(remote.snapshot)
            remote.complete = True
            remote.ready.set()

    @contextlib.asynccontextmanager
    async def follow(
        self, execution: Execution, after: int
    ) -> AsyncIterator[tuple[Chunk, Follower] | None]:
        """The log past `after` of an execution another node runs, and a follower of what it
        writes next; None when no node answered within `SNAPSHOT_WAIT` (not started yet)."""
        execution_id = execution.id
        remote = _Remote(uuid.uuid4().hex, after)
        self._followers.setdefault(execution_id, set()).add(remote)
        keepalive = asyncio.create_task(self._keep_following(execution, remote))
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SNAPSHOT_WAIT):
                    await remote.ready.wait()
            if not remote.complete:
                yield None
            else:
                snapshot = Chunk(remote.start, bytes(remote.snapshot))
                remote.snapshot = bytearray()
                yield snapshot, remote.follower
        finally:
            keepalive.cancel()
            remotes = self._followers[execution_id]
            remotes.discard(remote)
            if not remotes:
                del self._followers[execution_id]

    async def _keep_following(self, execution: Execution, remote: _Remote) -> None:
        """Ask for the log, then renew the lease; and since an end may be announced to no
        one (a notification lost), read the record each time too."""
        message = {"e": execution.id, "r": remote.request, "a": remote.start}
        await self.send(FOLLOW, json.dumps(message))
        while True:
            await asyncio.sleep(KEEPALIVE)
            await self.send(FOLLOW, json.dumps({"e": execution.id}))
            try:
                record = await self.store.executions.find(execution.project_id, execution.id)
            except Exception as exc:  # the database away: look again next time
                log.warning("could not read execution %s: %s", execution.id, exc)
                continue
            if record is None or record.status.is_final:
                self.ended(execution.id)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
