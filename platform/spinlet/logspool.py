"""Where a running execution's log goes as it arrives: a little memory, then a spool file.

The runtime sends output as the function writes it (runtime protocol v2), so the node holds a
log while it grows instead of receiving it whole at the end. A `LogSpool` keeps up to `memory`
bytes (64 KiB) in memory; past that they go to an unlinked temporary file. The file never holds
more than the log cap needs: the first half of the cap (the head, written once) and a ring of
the last half (the rolling tail, overwritten in place), so a function printing in a loop for an
hour uses `limit` bytes of disk, not gigabytes. `text()` is the final log by the rules of
`logcap` (head and tail at line boundaries, one marker counting every byte dropped).

`write` never touches the file: it appends to memory, and each time `memory` bytes are held it
hands them, as one batch, to a thread of the loop's executor, which writes them (a batch larger
than the ring only for its last `limit / 2` bytes). One batch is in flight at a time; when the
next one is full before it is written (the disk is slower than the function's output), the loop
writes both itself, in order, under the spool's lock: then a slow disk slows the function's
output (the runtime's pipe fills, its writes block) instead of growing the node's memory. So a
spool holds at most two batches in memory. `text()` reads the file back: call it in a thread
when `spooled` (`text_of` does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
from typing import Protocol

from spinlet.logcap import cap_logs, fit_log

__all__ = ["MEMORY", "LogSink", "LogSpool", "text_of"]

log = logging.getLogger(__name__)

#: How much of a log a `LogSpool` keeps in memory before it writes to its file.
MEMORY = 64 * 1024


class LogSink(Protocol):
    """Receives an execution's output as it is written (`RuntimeBackend.execute(log=...)`)."""

    def write(self, stream: str, data: str, t: float) -> None:
        """`data` was written to `stream` (`stdout` or `stderr`) at unix time `t`; returns
        quickly, whatever the amount."""

    def text(self) -> str:
        """The log so far, capped (`logcap` rules: head, one marker, tail)."""


class LogSpool:
    """A `LogSink` in bounded memory (`memory` bytes) and bounded disk (`limit` bytes).

    Stream byte `o` of the log is at file offset `o` while `o` is in the head, else in the
    ring after it, at `head + (o - head) % ring`; so until the log outgrows the file it is
    simply the log, and after, the head and the last `ring` bytes, rotated.
    """

    def __init__(
        self, limit: int, *, memory: int = MEMORY, directory: str | os.PathLike[str] | None = None
    ) -> None:
        if limit < 1 or memory < 1:
            raise ValueError("limit and memory must be positive numbers of bytes")
        self.limit = limit
        self.memory = memory
        self.directory = directory
        self._head = limit // 2
        #: The tail's half, and the byte before it (whether the tail starts a line).
        self._ring = limit - limit // 2 + 1
        self._pending = bytearray()  # the log's bytes from `_flushed` on, not handed off yet
        self._flushed = 0
        self._batch: _Batch | None = None  # the last batch handed off (written, or on its way)
        self._lock = threading.Lock()  # held while writing the file
        self._fd: int | None = None
        self._closed = False
        self._text: tuple[int, str] | None = None  # `text()` as of `size` bytes

    @property
    def size(self) -> int:
        """How many bytes were written in all (dropped ones included)."""
        return self._flushed + len(self._pending)

    @property
    def spooled(self) -> bool:
        """Whether part of the log went to the file (`text()` then reads it back)."""
        return self._batch is not None

    @property
    def memory_bytes(self) -> int:
        """The bytes held in memory: pending, and a batch not written yet."""
        batch = self._batch
        return len(self._pending) + (0 if batch is None or batch.done else len(batch.data))

    @property
    def disk_bytes(self) -> int:
        return 0 if self._fd is None else os.fstat(self._fd).st_size

    def write(self, stream: str, data: str, t: float) -> None:
        if self._closed:
            raise ValueError("write to a closed LogSpool")
        if not data:
            return
        if "\x00" in data:  # PostgreSQL's text cannot hold it (as `cap_logs` does)
            data = data.replace("\x00", "\ufffd")
        self._pending += data.encode("utf-8", "replace")
        if len(self._pending) >= self.memory:
            self._hand_off()

    def text(self) -> str:
        size = self.size
        if self._text is not None and (self._closed or self._text[0] == size):
            return self._text[1]
        if self._closed:
            return ""
        if self._batch is None:
            text = cap_logs(self._pending.decode("utf-8", "replace"), self.limit)
        else:
            self._hand_off(here=True)
            if self._fd is None:  # the file could not be made (logged)
                text = ""
            elif size <= self._head + self._ring:
                whole = os.pread(self._fd, size, 0)
                text = cap_logs(whole.decode("utf-8", "replace"), self.limit)
            else:
                head = os.pread(self._fd, self._head, 0)
                ring = os.pread(self._fd, self._ring, self._head)
                turn = (size - self._head) % self._ring  # where the oldest tail byte is
                tail = ring[turn:] + ring[:turn]
                text = fit_log(head, tail, size - self._head - self._ring, self.limit)
        self._text = (size, text)
        return text

    def close(self) -> None:
        """Drop what is held (memory and file); `text()` keeps answering what it last did.

        Never waits: a batch being written in a thread now closes the file when it is done."""
        self._closed = True
        self._pending = bytearray()
        if self._lock.acquire(blocking=False):
            try:
                self._drop_file()
            finally:
                self._lock.release()

    def _drop_file(self) -> None:
        self._batch = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LogSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _hand_off(self, *, here: bool = False) -> None:
        """Hand what is pending to a thread as a batch, or write it `here` (with the batch
        before it, if that is not written yet)."""
        batch = _Batch(self._flushed, bytes(self._pending))
        self._flushed += len(batch.data)
        self._pending.clear()
        previous, self._batch = self._batch, batch
        if here:
            self._write(previous, batch)
        elif previous is not None and not previous.done:
            self._catch_up(previous, batch)
        else:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a script, a test): nothing to keep free
                self._write(batch)
            else:
                loop.run_in_executor(None, self._write, batch)

    def _catch_up(self, previous: _Batch, batch: _Batch) -> None:
        """The writer lags behind the function: write on the loop, in order (the one place
        a spool blocks the loop, for at most two batches: the function's output waits)."""
        self._write(previous, batch)

    def _write(self, *batches: _Batch | None) -> None:
        with self._lock:
            for batch in batches:
                if batch is None or batch.done or self._closed:
                    continue
                batch.done = True
                try:
                    self._store(batch.offset, batch.data)
                except OSError as exc:  # a full disk: the log misses this part
                    log.warning("could not spool %d bytes of a log: %s", len(batch.data), exc)
            if self._closed:  # closed while this was being written
                self._drop_file()

    def _store(self, offset: int, raw: bytes) -> None:
        """Put the log's bytes `raw`, which start at `offset`, where they belong in the file."""
        if self._fd is None:
            with tempfile.TemporaryFile(dir=self.directory) as file:  # unlinked: gone when closed
                self._fd = os.dup(file.fileno())
        view = memoryview(raw)
        if offset < self._head:
            room = self._head - offset
            os.pwrite(self._fd, view[:room], offset)
            view, offset = view[room:], self._head
        if len(view) > self._ring:  # only its last `ring` bytes can be kept
            offset += len(view) - self._ring
            view = view[len(view) - self._ring :]
        while view:
            at = (offset - self._head) % self._ring
            part = view[: self._ring - at]
            os.pwrite(self._fd, part, self._head + at)
            view, offset = view[len(part) :], offset + len(part)


class _Batch:
    """Bytes of the log on their way to the file, from `offset`; written once, by whichever of
    the executor's thread and the loop comes first."""

    __slots__ = ("data", "done", "offset")

    def __init__(self, offset: int, data: bytes) -> None:
        self.offset = offset
        self.data = data
        self.done = False


async def text_of(sink: LogSink) -> str:
    """`sink.text()`, in a thread when that reads a spool file back (off the event loop)."""
    if isinstance(sink, LogSpool) and sink.spooled:
        return await asyncio.to_thread(sink.text)
    return sink.text()
