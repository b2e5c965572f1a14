"""The logs of the executions running on this node, for those who follow them as they grow.

The runner wraps each execution's `LogSpool` in a `LiveLog` (`LiveLogs.open`), which passes
every write on to the spool and, only while someone follows, to the followers too, as `Chunk`s
that know their stream, their time and their byte offset in the log. Nobody following costs a
write one attribute test, and an execution a dict entry (the warm path pays nothing else).

A follower holds at most `FOLLOWER_MEMORY` bytes not yet sent: one that falls further behind
(a slow reader) is dropped, its queue freed; it may start again from the offset it reached
(Server-Sent Events' `Last-Event-ID`). What was written before it came is the spool's text
(`LogSpool.text()`, capped by the log limit), its snapshot.

The log cap holds for followers too: they get the first `limit` bytes as they are written, and
nothing more live; at the end, a marker counting the bytes they missed, and the stored log's
tail. Offsets are those of the log as written, so a marker stands for the bytes it counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from spinlet.logcap import TRUNCATION_MARKER, split_capped
from spinlet.logspool import LogSpool

__all__ = ["FOLLOWER_MEMORY", "Chunk", "Follower", "LiveLog", "LiveLogs", "log_after"]

#: The bytes a follower may have waiting before it is dropped.
FOLLOWER_MEMORY = 256 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    """Output written to `stream` at unix time `t` (None: not known), bytes `start` to
    `start + len(data)` of the log."""

    start: int
    data: bytes
    stream: str | None = None
    t: float | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def after(self, offset: int) -> Chunk | None:
        """The part of it past `offset` (None: nothing)."""
        if self.end <= offset:
            return None
        if self.start >= offset:
            return self
        return Chunk(offset, self.data[offset - self.start :], self.stream, self.t)


def log_after(text: str, offset: int) -> Chunk:
    """What a log whose text is `text` (capped: head, marker, tail) holds past byte `offset` of
    the log as written. Past the head, the bytes the cap dropped are a marker counting those
    the reader lacks; the chunk ends where the log does (its start is where it would begin were
    the marker the bytes it stands for)."""
    head, dropped, tail = split_capped(text.encode())
    size = len(head) + dropped + len(tail)
    tail_start = len(head) + dropped
    if not dropped or offset >= tail_start:
        part = (head + tail)[offset:] if not dropped else tail[offset - tail_start :]
    else:
        missing = tail_start - max(offset, len(head))
        part = head[offset:] + TRUNCATION_MARKER.format(dropped=missing).encode() + tail
    return Chunk(size - len(part), part)


class Follower:
    """One reader of a live log: the chunks it has not taken yet, within `memory` bytes."""

    def __init__(self, memory: int = FOLLOWER_MEMORY) -> None:
        self.memory = memory
        self.held = 0
        self.dropped = False
        self.ended = False
        self._chunks: deque[Chunk] = deque()
        self._ready = asyncio.Event()

    def push(self, chunk: Chunk) -> None:
        if self.dropped or self.ended:
            return
        if self.held + len(chunk.data) > self.memory:  # too slow: let it go
            self.drop()
            return
        self._chunks.append(chunk)
        self.held += len(chunk.data)
        self._ready.set()

    def drop(self) -> None:
        """Let it go (too slow, or a part of the log did not reach it): its queue is freed
        and `take` answers [] at once."""
        self.dropped = True
        self._chunks.clear()
        self.held = 0
        self._ready.set()

    def end(self) -> None:
        """The log is complete: nothing more will come."""
        self.ended = True
        self._ready.set()

    async def take(self) -> list[Chunk]:
        """The chunks that came since the last call, once there is one; [] at the end, or
        when dropped (see `dropped`)."""
        while not self._chunks and not self.ended and not self.dropped:
            self._ready.clear()
            await self._ready.wait()
        chunks = list(self._chunks)
        self._chunks.clear()
        self.held = 0
        return chunks


class LiveLog:
    """A `LogSink`: the execution's spool, and its followers while it has some."""

    __slots__ = ("_registry", "execution_id", "followers", "publish", "spool")

    def __init__(
        self, execution_id: str, spool: LogSpool, registry: dict[str, LiveLog] | None = None
    ) -> None:
        self.execution_id = execution_id
        self.spool = spool
        self._registry = registry
        self.followers: set[Follower] = set()
        #: Set while another node follows it (`LiveLogs.publisher`).
        self.publish: Callable[[str, Chunk], None] | None = None

    def write(self, stream: str, data: str, t: float) -> None:
        if not (self.followers or self.publish):
            self.spool.write(stream, data, t)
            return
        start = self.spool.size
        self.spool.write(stream, data, t)
        if start >= self.spool.limit:  # past the cap: followers get the tail at the end
            return
        raw = data.replace("\x00", "\ufffd").encode("utf-8", "replace")
        if start + len(raw) > self.spool.limit:
            raw = raw[: self.spool.limit - start]
            raw = raw.decode("utf-8", "ignore").encode()  # not ending in half a character
        chunk = Chunk(start, raw, stream, t)
        for follower in self.followers:
            follower.push(chunk)
        if self.publish is not None:
            self.publish(self.execution_id, chunk)

    def text(self) -> str:
        return self.spool.text()

    def snapshot(self, after: int) -> Chunk:
        """The log so far past byte `after` (capped)."""
        return log_after(self.spool.text(), after)

    def close(self) -> None:
        """No longer live: its followers have it all."""
        if self._registry is not None and self._registry.get(self.execution_id) is self:
            del self._registry[self.execution_id]
        for follower in self.followers:
            follower.end()
        self.followers.clear()

    def __enter__(self) -> LiveLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LiveLogs:
    """The live logs of this node, by execution id."""

    def __init__(self) -> None:
        self._logs: dict[str, LiveLog] = {}
        self._opened: dict[str, asyncio.Event] = {}

    def open(self, execution_id: str, spool: LogSpool) -> LiveLog:
        """The sink of a running execution, followable until it is closed (a context manager,
        left after its end is recorded, so a follower that sees the log close finds the final
        record). A plain class, not a generator's context: it is on every execution's path."""
        live = LiveLog(execution_id, spool, self._logs)
        self._logs[execution_id] = live
        if self._opened and (opened := self._opened.pop(execution_id, None)) is not None:
            opened.set()
        return live

    def get(self, execution_id: str) -> LiveLog | None:
        return self._logs.get(execution_id)

    @contextlib.contextmanager
    def follow(self, execution_id: str, after: int = 0) -> Iterator[tuple[Chunk, Follower] | None]:
        """The snapshot of a running execution's log past byte `after`, and a follower of what
        comes next (None: it does not run on this node)."""
        live = self._logs.get(execution_id)
        if live is None:
            yield None
            return
        snapshot = live.snapshot(after)
        follower = Follower()
        live.followers.add(follower)
        try:
            yield snapshot, follower
        finally:
            live.followers.discard(follower)

    async def wait_opened(self, execution_id: str, seconds: float) -> None:
        """Until the execution starts on this node, or `seconds` have passed."""
        if execution_id in self._logs:
            return
        opened = self._opened.setdefault(execution_id, asyncio.Event())
        try:
            async with asyncio.timeout(seconds):
                await opened.wait()
        except TimeoutError:
            pass
        finally:
            if self._opened.get(execution_id) is opened and not opened.is_set():
                del self._opened[execution_id]
