"""Spinlet's Python runtime server: runtime protocols v1 and v2 (see `runtimes/README.md`).

Runs inside a function's container (or as a plain process for local development), standard
library only. It listens on the Unix socket `$SPINLET_SOCKET` (default `/run/spinlet/rt.sock`),
speaks HTTP/1.1 with keep-alive, and handles one request at a time:

- `GET /health`: `{"protocol": 1, "protocols": [1, 2], "initialized": bool, "features":
  ["code_dir", "layer_dir"]}`.
- `POST /init`: agree on the protocol (v2 when the node asks for it with `"protocol": 2`, else
  v1), put the function's code directory (`code_dir`, filled by the node) first on
  `sys.path` (or extract a base64 zip, `code`, under `$TMPDIR`), and its dependency layer
  (`layer_dir`, optional) right after it, before the image's own paths; import its entry module,
  look up the handler.
  Allowed once per process; whatever happens, a second `/init` is refused with 409.
- `POST /run`: call the handler with one execution's input and return its result or error,
  with everything written to file descriptors 1 and 2 during the call as `logs` (and, when the
  function raised, its traceback as the log's last lines). A log longer than `log_limit` keeps
  its first and last halves, at line boundaries, with a marker between them.
  In v2, the reply streams instead: a log frame per read of fd 1's pipe or fd 2's (stdout and
  stderr apart), as the function writes, then the result frame; the node caps the log.

A child the function forks never gets back into the server: it exits where it returns from the
function's code. In a container (where the server is PID 1), processes that runs leave behind go
on, unless they use up the container's pids (a fork bomb's): then they are killed before the next
run can start; those started at import time are spared.

Every response is written with a single `sendall` (a split write costs a Nagle delay over TCP),
but a v2 `/run` reply, whose frames leave as the function's output comes (one write still, for a
run that prints nothing).
Time limits are the control plane's job: it destroys the container when a deadline passes.

Run as `python3 /opt/spinlet/server.py`.
"""

from __future__ import annotations

import array
import base64
import binascii
import codecs
import contextlib
import fcntl
import http
import inspect
import io
import json
import logging
import math
import os
import queue
import select
import signal
import socketserver
import stat
import sys
import tempfile
import termios
import threading
import time
import traceback
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path, PurePosixPath
from types import FrameType, ModuleType
from typing import Any, ClassVar, NamedTuple

#: The protocol of a node that does not ask for one at `/init` (and the one `/health` names).
PROTOCOL = 1
#: The versions this server speaks; v2 streams `/run`'s output as frames.
PROTOCOLS = (1, 2)
STREAMING = 2
#: What this server can do beyond protocol v1's minimum, announced by `/health`: `code_dir` is
#: an `/init` that takes a directory the node filled instead of a base64 zip; `layer_dir` one
#: that also takes the function's dependency layer, a directory of installed wheels.
FEATURES = ("code_dir", "layer_dir")
DEFAULT_SOCKET = "/run/spinlet/rt.sock"
DEFAULT_LOG_LIMIT = 1024 * 1024
#: Requests larger than this are refused (the control plane caps packages far below it).
MAX_BODY = 1024 * 1024 * 1024
#: Limits of a request's headers: how many, and the length of one.
MAX_HEADERS = 100
MAX_HEADER_LINE = 65536
#: How long to wait for the rest of a run's output once fds 1 and 2 are restored. Longer only
#: when a background child still holds the pipe open; its later output is dropped.
DRAIN_TIMEOUT = 0.2
#: The most read from a pipe at a time (a v2 log frame holds one read).
READ_SIZE = 65536
#: Between the head and the tail of a log longer than its limit (the node reads it back).
TRUNCATION_MARKER = "\n[spinlet: log truncated, {dropped} bytes dropped]\n"
#: How long to keep killing the processes earlier runs left (a fork bomb may still be forking).
LEFTOVER_TIMEOUT = 2.0

Handler = Callable[..., Any]
ErrorInfo = dict[str, str]


# --- errors ------------------------------------------------------------------------------------


class RequestError(Exception):
    """A request the server refuses; becomes `{"error": {...}}` with an HTTP status."""

    def __init__(self, status: int, type_: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.close = close

    def as_error(self) -> ErrorInfo:
        return {"type": self.type, "message": self.message, "traceback": ""}


class LoadError(Exception):
    """The function's code cannot be loaded (bad zip, bad entry); a 400 reply to `/init`."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message

    def as_error(self) -> ErrorInfo:
        return {"type": self.type, "message": self.message, "traceback": ""}


def describe_exception(exc: BaseException) -> ErrorInfo:
    """`{type, message, traceback}` of an exception raised by the function's code.

    Frames of this server and of importlib's machinery are left out of the traceback, so that it
    starts in the function's own code.
    """
    summary = traceback.TracebackException.from_exception(exc)
    summary.stack = traceback.StackSummary.from_list(
        [frame for frame in summary.stack if not _is_internal_frame(frame.filename)]
    )
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(summary.format()),
    }


def _is_internal_frame(filename: str) -> bool:
    return filename == __file__ or filename.startswith("<frozen importlib")


# --- output capture ----------------------------------------------------------------------------


def make_std_streams_unbuffered() -> None:
    """Make `sys.stdout`/`sys.stderr` write straight to fds 1 and 2 (like `python -u`).

    Buffered text would reach the pipe out of order with `os.write(1, ...)` and child output,
    or after the fds are restored (and then be lost to the execution's log).
    """
    for name, fd in (("stdout", 1), ("stderr", 2)):
        raw = io.FileIO(fd, "w", closefd=False)
        stream = io.TextIOWrapper(
            raw, encoding="utf-8", errors="backslashreplace", write_through=True
        )
        setattr(sys, name, stream)


def flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the function may have replaced or closed them
            stream.flush()


class Drainer:
    """A thread that drains capture pipes one after another: starting a thread per run costs
    more than a small function's whole run. It serves until a pipe it drains stays open past
    the end of its run (a background child holds it): it then finishes that pipe alone, and
    the next run gets a new drainer."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[PipeCapture] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def drain(self, capture: PipeCapture) -> None:
        self._jobs.put(capture)

    def _serve(self) -> None:
        while True:
            capture = self._jobs.get()
            capture.drain()
            if capture.abandoned:
                return  # a newer drainer serves the next runs


class PipeCapture:
    """What both ways of capturing a run's output share: fds 1 and 2 are redirected into pipes
    for a `with` block, and a `Drainer` thread reads the pipes (`drain`). When no drainer thread
    can be started, `make_room` (if given) is called and the start tried again."""

    _drainer: ClassVar[Drainer | None] = None  # the one serving the next run
    make_room: Callable[[], None] | None
    abandoned: bool  # its run ended before its pipes did: its drainer is done after

    def drain(self) -> None:
        raise NotImplementedError

    def _ready_drainer(self) -> Drainer:
        drainer = PipeCapture._drainer
        while drainer is None:
            try:
                drainer = PipeCapture._drainer = Drainer()
            except RuntimeError:  # "can't start new thread": the pids are used up
                if self.make_room is None:
                    raise
                make_room, self.make_room = self.make_room, None
                make_room()
        return drainer


def restore_std_fds(saved: tuple[int, int] | None) -> None:
    """Point fds 1 and 2 back at what they were before a capture (`saved`: their copies)."""
    flush_std_streams()
    assert saved is not None
    stdout, stderr = saved
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.close(stdout)
    os.close(stderr)


class OutputCapture(PipeCapture):
    """Redirects fds 1 and 2 into one pipe for a `with` block and keeps what is written
    (protocol v1, and `/init`'s logs).

    A drainer thread reads the pipe, keeping the first half of `limit` bytes and the last bytes
    (a little more than the other half), and counting those in between: the end of a long log
    is where its error usually is. When the block ends, fds 1 and 2 are restored and the drainer
    gets end-of-file, unless a background child still holds the pipe: then it is left draining
    (and discarding) on its own.
    """

    def __init__(self, limit: int, make_room: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.make_room = make_room
        self._head = bytearray()
        self._tail = bytearray()
        self._head_room = limit // 2
        #: The tail's half, and the byte before it: whether it starts a line.
        self._tail_room = limit - limit // 2 + 1
        self._seen = 0
        self._detached = False
        self._lock = threading.Lock()
        self._saved: tuple[int, int] | None = None
        self._read_fd = -1
        self._done = threading.Event()
        self.abandoned = False  # its run ended before its pipe did: its drainer is done after

    def __enter__(self) -> OutputCapture:
        flush_std_streams()
        drainer = self._ready_drainer()
        self._read_fd, write_fd = os.pipe()
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)  # fds 1 and 2 now hold the pipe's write end
        drainer.drain(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        restore_std_fds(self._saved)
        self._done.wait(DRAIN_TIMEOUT)
        with self._lock:
            if not self._done.is_set():  # its drainer stays with this pipe until its end
                self.abandoned = True
                PipeCapture._drainer = None
            self._detached = True

    def drain(self) -> None:
        """Read the pipe to its end (in the drainer's thread)."""
        try:
            while chunk := os.read(self._read_fd, 65536):
                with self._lock:
                    if not self._detached:
                        self._keep(chunk)
        finally:
            os.close(self._read_fd)
            with self._lock:  # decided with `abandoned`, not in between
                self._done.set()

    def _keep(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        room = self._head_room - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        if len(self._tail) > 2 * self._tail_room:  # trimmed now and then, not on every chunk
            del self._tail[: len(self._tail) - self._tail_room]

    def log(self, ending: str = "") -> str:
        """What the block wrote, then `ending` on a line of its own, in at most `limit` bytes
        (`fit_log`): a traceback counts within the limit and is kept as the log's end."""
        assert self._detached
        tail = bytes(self._tail)
        if ending:
            last = tail[-1:] or self._head[-1:]
            tail += (b"\n" if last not in (b"", b"\n") else b"") + ending.encode(
                "utf-8", "backslashreplace"
            )
        gap = self._seen - len(self._head) - len(self._tail)
        return fit_log(bytes(self._head), tail, gap, self.limit)


def fit_log(head: bytes, tail: bytes, gap: int, limit: int) -> str:
    """A log of `head`, then `gap` bytes not kept, then `tail`, in at most `limit` bytes.

    Within the limit (and nothing dropped), it is kept whole. Else the first half of the limit
    and the last half are kept, each cut at a line boundary (a line longer than its half is cut
    at a character boundary), with `TRUNCATION_MARKER` between them saying how many bytes were
    dropped in all. The node caps logs the same way (`spinlet.logcap`).
    """
    if not gap and len(head) + len(tail) <= limit:
        return (head + tail).decode("utf-8", "replace")
    if not gap:
        head = tail = head + tail
    first = head[: _head_end(head, limit // 2)]
    last = tail[_tail_start(tail, limit - limit // 2) :]
    total = len(head) + gap + len(tail) if gap else len(head)
    dropped = total - len(first) - len(last)
    return (
        first.decode("utf-8", "replace")
        + TRUNCATION_MARKER.format(dropped=dropped)
        + last.decode("utf-8", "replace")
    )


def _head_end(data: bytes, room: int) -> int:
    """Where the head of `data` (bytes are dropped after it) ends: after the last whole line in
    its first `room` bytes, or after the last whole character when they hold no line's end."""
    end = min(room, len(data))
    newline = data.rfind(b"\n", 0, end)
    if newline >= 0:
        return newline + 1
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data[:end], final=False)  # keeps an unfinished character back
    return end - len(decoder.getstate()[0])


def _tail_start(data: bytes, room: int) -> int:
    """Where the tail of `data` starts: at the first whole line in its last `room` bytes, or at
    the first whole character when no line starts there."""
    start = len(data) - room
    if start <= 0:
        return 0
    if data[start - 1] == 0x0A:
        return start
    newline = data.find(b"\n", start)
    if 0 <= newline < len(data) - 1:
        return newline + 1
    begin = start
    while start < len(data) and start - begin < 3 and data[start] & 0xC0 == 0x80:
        start += 1  # a byte that continues a character: start at the next one
    return start


# --- streamed output (protocol v2) -------------------------------------------------------------


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


#: Ends a chunked body.
LAST_CHUNK = b"0\r\n\r\n"


def log_frame(stream: str, text: str, t: float) -> bytes:
    return f'{{"type":"log","stream":"{stream}","data":{json.dumps(text)},"t":{t!r}}}\n'.encode()


class FrameWriter:
    """The body of a v2 `/run` reply: JSON lines ("frames"), a chunk each, written to the
    connection as they come. Writes block while the node does not read (backpressure: so do
    the function's own writes, behind them).

    The response's head goes with the first write, so a run that prints nothing is answered in
    one write, as in v1. One thread writes at a time: the drainer while the function runs, then
    the request's thread (`finish`), once the drainer has let go of the run (`StreamCapture`).
    """

    def __init__(self, write: Callable[[bytes], object], head: bytes) -> None:
        self._write = write
        self._head = head
        self.started = False  # the head is sent: nothing but frames can follow it
        self.broken = False  # the node went away
        #: Whether the log so far ends a line (both streams, in the order they were sent).
        self._line_ended = True

    def log(self, stream: str, text: str, t: float) -> None:
        """Send a log frame (none for no text); a node gone away is found by `finish`."""
        if not text or self.broken:
            return
        self._line_ended = text.endswith("\n")
        try:
            self._send(chunk(log_frame(stream, text, t)))
        except OSError:
            self.broken = True

    def finish(self, result: str, traceback: str) -> None:
        """Send the traceback (if any) as the last stderr frame, on a line of its own in the
        log, then the result frame, and end the body: in one write."""
        if self.broken:
            raise ConnectionError("the node closed the connection during the run")
        data = b""
        if traceback:
            text = traceback if self._line_ended else "\n" + traceback
            data = chunk(log_frame("stderr", text, time.time()))
        self._send(data + chunk(result.encode() + b"\n") + LAST_CHUNK)

    def _send(self, data: bytes) -> None:
        if not self.started:
            data, self._head = self._head + data, b""
            self.started = True
        self._write(data)


class StreamPipe:
    """One of a v2 run's two pipes, as its drainer reads it: the stream it carries, and that
    stream's decoder (a character split between two reads is decoded whole)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")


class StreamCapture(PipeCapture):
    """Redirects fd 1 and fd 2 into a pipe each for a `with` block, and sends what is written
    to them as log frames while the block runs (protocol v2): nothing is kept in memory.

    The drainer polls both pipes and sends a frame per read; a single thread, so frames never
    interleave on the connection, and a thread that serves run after run (see `Drainer`). When
    the block ends, fds 1 and 2 are restored, and the drainer sends the rest: what is in the
    pipes then (all the function wrote) is always sent, however slowly the node reads; after it,
    end-of-file, unless a background child still holds a pipe. Then the pipes are abandoned to
    the drainer, which discards what comes later, and the run is answered.

    A run that ends before the drainer has started on it (most do: waking a thread takes longer
    than a small function's run) has its pipes read by the request's own thread instead, which
    spares handing the run back and forth; pipes a background child holds are then left to a
    thread of their own.
    """

    def __init__(self, frames: FrameWriter, make_room: Callable[[], None] | None = None) -> None:
        self.frames = frames
        self.make_room = make_room
        self.abandoned = False
        self._saved: tuple[int, int] | None = None
        self._pipes: dict[int, StreamPipe] = {}  # by the fd of its read end
        self._ended = False  # fds 1 and 2 are restored: the function writes no more to them
        self._released = threading.Event()  # the drainer sends no more frames of this run
        self._reader: str | None = None  # who reads the pipes: "drainer" or "request"
        self._reader_lock = threading.Lock()

    def __enter__(self) -> StreamCapture:
        flush_std_streams()
        drainer = self._ready_drainer()
        self._saved = (os.dup(1), os.dup(2))
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, fd)
            os.close(write_fd)  # fd 1 (or 2) now holds the pipe's write end
            self._pipes[read_fd] = StreamPipe(stream)
        drainer.drain(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        restore_std_fds(self._saved)
        self._ended = True
        if self._claim("request"):
            poller = self._poller()
            self._send_the_rest(poller)
            self._leave(poller)
            return
        self._released.wait()  # at most DRAIN_TIMEOUT, once the function's output is sent
        if self.abandoned:
            PipeCapture._drainer = None

    def _claim(self, reader: str) -> bool:
        """Whether `reader` reads the pipes: the first to ask does."""
        with self._reader_lock:
            if self._reader is None:
                self._reader = reader
            return self._reader == reader

    def _poller(self) -> select.poll:
        poller = select.poll()
        for fd in self._pipes:
            poller.register(fd, select.POLLIN)
        return poller

    def drain(self) -> None:
        """Send the pipes' output until the run ends; discard it after (in the drainer)."""
        if not self._claim("drainer"):
            return  # the run ended first: the request's thread read them
        poller = self._poller()
        try:
            while self._pipes:
                if self._ended:
                    self._send_the_rest(poller)
                    break
                # Wakes up now and then to see whether the run ended (while a background child
                # holds a pipe, the end of the function brings no end-of-file).
                for fd, _ in poller.poll(DRAIN_TIMEOUT * 1000):
                    self._read(poller, fd)
            self.abandoned = bool(self._pipes)
            self._released.set()
            discard(poller, self._pipes)
        except BaseException:
            self.abandoned = True  # this drainer thread ends here: the next run gets a new one
            raise
        finally:
            for fd in self._pipes:
                os.close(fd)
            self._released.set()

    def _send_the_rest(self, poller: select.poll) -> None:
        """Send what the pipes hold once fds 1 and 2 are restored, then read their ends of
        file; a pipe a background child holds open stays open."""
        for fd in list(self._pipes):
            owed = pending_bytes(fd)
            while owed > 0 and fd in self._pipes:
                owed -= self._read(poller, fd)
        for fd, event in poller.poll(0):
            if event & (select.POLLHUP | select.POLLERR):  # no writer is left: a finite rest
                while self._read(poller, fd):
                    pass

    def _read(self, poller: select.poll, fd: int) -> int:
        """Read `fd` once and send what was read as a frame; at end-of-file, close it."""
        data = os.read(fd, READ_SIZE)
        pipe = self._pipes[fd]
        if not data:
            poller.unregister(fd)
            os.close(fd)
            del self._pipes[fd]
        text = pipe.decoder.decode(data, final=not data)
        self.frames.log(pipe.stream, text, time.time())
        return len(data)

    def _leave(self, poller: select.poll) -> None:
        """Leave the pipes a background child holds to a thread that discards what comes."""
        if not self._pipes:
            return
        pipes = dict(self._pipes)
        try:
            threading.Thread(target=discard, args=(poller, pipes), daemon=True).start()
        except RuntimeError:  # no thread can be started: the child's later writes fail
            for fd in pipes:
                os.close(fd)


def discard(poller: select.poll, pipes: dict[int, StreamPipe]) -> None:
    """Read `pipes` (registered with `poller`) to their ends, dropping what they bring."""
    while pipes:
        for fd, _ in poller.poll():
            if not os.read(fd, READ_SIZE):
                poller.unregister(fd)
                os.close(fd)
                del pipes[fd]


def pending_bytes(fd: int) -> int:
    """How many bytes the pipe `fd` holds, not yet read."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


# --- the function's code -----------------------------------------------------------------------


class CurrentStderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time (fd 2 is redirected during a run)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def function_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(h, CurrentStderrHandler) for h in logger.handlers):
        handler = CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class Context:
    """The `context` argument of `main(event, context)`."""

    def __init__(
        self,
        *,
        execution_id: str,
        function_id: str,
        function_name: str,
        function_version: int,
        deadline: float | None,
    ) -> None:
        self.execution_id = execution_id
        self.function_id = function_id
        self.function_name = function_name
        self.function_version = function_version
        self.deadline = deadline
        self.logger = function_logger(function_name or "function")

    def remaining_time(self) -> float:
        """Seconds left before the control plane ends this execution (inf without deadline)."""
        if self.deadline is None:
            return math.inf
        return max(0.0, self.deadline - time.time())

    def __repr__(self) -> str:
        return f"<Context execution_id={self.execution_id!r} function={self.function_name!r}>"


def extract_package(code_b64: str) -> Path:
    """Decode and extract the zip into a fresh directory (under `$TMPDIR`); return it."""
    try:
        data = base64.b64decode(code_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LoadError("InvalidPackage", f"code is not valid base64: {exc}") from exc
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                check_member_name(name)
            directory = Path(tempfile.mkdtemp(prefix="spinlet-code-"))
            archive.extractall(directory)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise LoadError("InvalidPackage", f"code is not a valid zip archive: {exc}") from exc
    except OSError as exc:
        raise LoadError("InvalidPackage", f"cannot extract the package: {exc}") from exc
    return directory


def check_member_name(name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    drive = len(name) > 1 and name[0].isalpha() and name[1] == ":"
    if path.is_absolute() or ".." in path.parts or drive:
        raise LoadError("InvalidPackage", f"zip entry {name!r} points outside the package")


def import_entry(entry: str, code_dir: Path) -> Handler:
    """Import the module of `entry` ("module.func", module may be dotted); return the function."""
    module_name, _, func_name = entry.rpartition(".")
    if not module_name or not func_name:
        raise LoadError("InvalidEntry", f"entry {entry!r} is not of the form module.function")
    try:
        __import__(module_name)  # unlike importlib.import_module, drops importlib's frames
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise LoadError(
                "ModuleNotFoundError",
                f"module {module_name!r} of entry {entry!r} is not in the package",
            ) from exc
        raise
    top_level = module_name.partition(".")[0]
    if _in_package(top_level, code_dir) and not _loaded_from(sys.modules[top_level], code_dir):
        raise LoadError(
            "EntryNotFound",
            f"module {top_level!r} of the package is shadowed by Python's own module of that "
            "name; rename it",
        )
    module = sys.modules[module_name]
    func = getattr(module, func_name, None)
    if func is None:
        raise LoadError("EntryNotFound", f"module {module_name!r} has no function {func_name!r}")
    if not callable(func):
        raise LoadError("EntryNotFound", f"{entry!r} is not callable")
    return func  # type: ignore[no-any-return]


def _in_package(top_level: str, code_dir: Path) -> bool:
    return (code_dir / f"{top_level}.py").exists() or (code_dir / top_level).is_dir()


def _loaded_from(module: ModuleType, code_dir: Path) -> bool:
    """Whether `module` (a module, package or namespace package) comes from `code_dir`."""
    locations = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", [])]
    return any(str(location).startswith(str(code_dir) + os.sep) for location in locations)


def wants_context(func: Handler) -> bool:
    """Whether the handler takes a second positional parameter (the context)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional >= 2


# --- processes the function starts -------------------------------------------------------------


def end_if_forked(server_pid: int, failed: bool) -> None:
    """End a child the function forked (`os.fork()`) that returns from the function's code.

    The child holds a copy of this server and of its connection: left to go on, it would send a
    reply of its own and serve later requests alongside the server (a fork bomb's children
    would hand the next executions stale replies).
    """
    if os.getpid() != server_pid:
        os._exit(1 if failed else 0)


def owns_pid_namespace() -> bool:
    """Whether this server is PID 1 of its own PID namespace (as in its container), so that
    every other process there comes from the function."""
    return os.getpid() == 1


def other_processes() -> dict[int, tuple[str, int]]:
    """`{pid: (state, parent pid)}` of the other processes in this PID namespace."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:  # it ended meanwhile
            continue
        # "pid (command) state ppid ...": the command may hold spaces and parentheses
        state, parent = stat[stat.rfind(b")") + 2 :].split()[:2]
        found[int(entry)] = (state.decode("ascii", "replace"), int(parent))
    return found


def end_leftovers(spared: set[int]) -> None:
    """Kill the processes earlier runs left (running or exited: zombies hold pids too) and
    reap them, all but `spared` (those from import time) and their children."""
    deadline = time.monotonic() + LEFTOVER_TIMEOUT
    while True:
        pending = False
        for pid, (state, parent) in other_processes().items():
            if pid in spared or parent in spared:
                continue
            pending = True
            if state not in ("Z", "X"):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            elif parent == os.getpid():  # else its parent dies first, and it becomes ours
                with contextlib.suppress(OSError):
                    os.waitpid(pid, os.WNOHANG)
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(0.001)


# --- protocol ----------------------------------------------------------------------------------


class Runtime:
    """The state of this runtime: the loaded function, once `/init` succeeded."""

    def __init__(self) -> None:
        self.init_attempted = False
        self.handler: Handler | None = None
        self.pass_context = False
        self.log_limit = DEFAULT_LOG_LIMIT
        self.protocol = PROTOCOL  # agreed at `/init`
        self.pid = os.getpid()
        #: Processes of its PID namespace there after `/init`; None outside a container.
        self.spared: set[int] | None = None

    def health(self) -> tuple[int, dict[str, Any]]:
        return 200, {
            "protocol": PROTOCOL,
            "protocols": list(PROTOCOLS),
            "initialized": self.handler is not None,
            "features": list(FEATURES),
        }

    def init(self, body: Any) -> tuple[int, dict[str, Any]]:
        if self.init_attempted:
            raise RequestError(
                409, "AlreadyInitialized", "this runtime has already been initialised"
            )
        request = parse_init(body)
        self.init_attempted = True
        self.log_limit = request.log_limit
        self.protocol = request.protocol
        handler: Handler | None = None
        error: ErrorInfo | None = None
        started = time.perf_counter()
        with OutputCapture(request.log_limit) as capture:
            try:
                handler = self._load(request)
            except LoadError as exc:
                error = exc.as_error()
            except BaseException as exc:  # an import-time exception of the function's code
                error = describe_exception(exc)
            end_if_forked(self.pid, handler is None)
        init_ms = (time.perf_counter() - started) * 1000
        if handler is None:
            assert error is not None
            return 400, {"error": error, "logs": capture.log(error["traceback"])}
        self.handler = handler
        self.pass_context = wants_context(handler)
        if owns_pid_namespace():
            self.spared = set(other_processes())
        return 200, {"protocol": self.protocol, "init_ms": init_ms, "logs": capture.log()}

    def _load(self, request: InitRequest) -> Handler:
        code = request.code
        code_dir = code if isinstance(code, Path) else extract_package(code)
        if not code_dir.is_dir():
            raise LoadError("InvalidPackage", f"the code directory {code_dir} does not exist")
        layer_dir = request.layer_dir
        if layer_dir is not None and not layer_dir.is_dir():
            raise LoadError("InvalidLayer", f"the layer directory {layer_dir} does not exist")
        # The function's own modules first, then its dependencies, then the image's: a module
        # of the package shadows a dependency of that name, and a dependency the image's.
        sys.path[0:0] = [str(code_dir)] + ([] if layer_dir is None else [str(layer_dir)])
        os.environ.update(request.environment)
        return import_entry(request.entry, code_dir)

    def _make_room(self) -> Callable[[], None] | None:
        """What frees the container's pids when a run cannot even start its output capture:
        processes earlier runs left behind (after a fork bomb, all of them) are ended then, in
        a container; processes from import time are spared."""
        spared = self.spared
        if spared is None:
            return None
        return lambda: end_leftovers(spared)

    @property
    def streams(self) -> bool:
        """Whether `/run` answers with frames as the function writes (protocol v2)."""
        return self.protocol >= STREAMING

    def run(self, body: Any) -> bytes:
        """Run one execution (protocol v1); returns the reply body, its log capped."""
        args = self._arguments(body)
        with OutputCapture(self.log_limit, self._make_room()) as capture:
            call = self._call(args)
        outcome = settle(*call)
        logs = capture.log(outcome.traceback)
        return outcome.reply(f'"logs":{json.dumps(logs)}').encode()

    def stream_run(self, body: Any, frames: FrameWriter) -> None:
        """Run one execution (protocol v2), its output sent to `frames` as it is written, then
        its result frame; the log is not capped here (the node keeps its head and tail)."""
        args = self._arguments(body)
        with StreamCapture(frames, self._make_room()):
            call = self._call(args)
        outcome = settle(*call)
        frames.finish(outcome.reply('"type":"result"', first=True), outcome.traceback)

    def _arguments(self, body: Any) -> tuple[Any, ...]:
        """The handler's arguments for a `/run` body; refusals come before any output."""
        if self.handler is None:
            raise RequestError(409, "NotInitialized", "POST /init has not succeeded yet")
        event, context = parse_run(body)
        return (event, context) if self.pass_context else (event,)

    def _call(self, args: tuple[Any, ...]) -> tuple[Any, ErrorInfo | None, float]:
        """Call the handler (inside an output capture): its result or error, and duration."""
        assert self.handler is not None
        result: Any = None
        error: ErrorInfo | None = None
        started = time.perf_counter()
        try:
            result = self.handler(*args)
        except BaseException as exc:
            error = describe_exception(exc)
        duration_ms = (time.perf_counter() - started) * 1000
        end_if_forked(self.pid, error is not None)
        return result, error, duration_ms


class Outcome(NamedTuple):
    """How one execution ended, ready to be sent: its result as JSON, or its error."""

    result_json: str | None
    error: ErrorInfo | None
    duration_ms: float

    @property
    def traceback(self) -> str:
        return "" if self.error is None else self.error["traceback"]

    def reply(self, member: str, *, first: bool = False) -> str:
        """The reply as a JSON object: `result` or `error`, `duration_ms`, and `member` (a
        preformatted `"name":value`) first, or after `result` or `error`."""
        if self.error is not None:
            outcome = f'"error":{json.dumps(self.error)}'
        else:
            outcome = f'"result":{self.result_json}'
        members = (member, outcome) if first else (outcome, member)
        return f'{{{members[0]},{members[1]},"duration_ms":{self.duration_ms!r}}}'


def settle(result: Any, error: ErrorInfo | None, duration_ms: float) -> Outcome:
    """The outcome of a call: its result serialised (only once), or its error; a result that is
    not JSON-serialisable is an error."""
    if error is not None:
        return Outcome(None, error, duration_ms)
    try:
        return Outcome(json.dumps(result, allow_nan=False), None, duration_ms)
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"the result is not JSON-serialisable: {exc}"
        error = {"type": "ResultNotSerializable", "message": message, "traceback": ""}
        return Outcome(None, error, duration_ms)


class InitRequest(NamedTuple):
    """A checked `/init` body."""

    code: str | Path  # the base64 zip, or the `code_dir` the node filled
    entry: str
    environment: dict[str, str]
    log_limit: int
    protocol: int  # agreed: the highest both the node and this server speak
    layer_dir: Path | None = None  # the function's dependency layer, filled by the node


def parse_init(body: Any) -> InitRequest:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    code = body.get("code")
    code_dir = body.get("code_dir")
    layer_dir = body.get("layer_dir")
    entry = body.get("entry", "main.main")
    environment = body.get("environment") or {}
    log_limit = body.get("log_limit", DEFAULT_LOG_LIMIT)
    asked = body.get("protocol")
    if (code is None) == (code_dir is None):
        raise bad_request('either "code_dir" (a directory) or "code" (a base64 zip) is required')
    for name, directory in (("code_dir", code_dir), ("layer_dir", layer_dir)):
        if directory is not None and not (isinstance(directory, str) and directory.startswith("/")):
            raise bad_request(f'"{name}" must be an absolute path')
    if code is not None and not isinstance(code, str):
        raise bad_request('"code" must be a base64 zip')
    if not isinstance(entry, str):
        raise bad_request('"entry" must be a string "module.function"')
    if not isinstance(environment, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in environment.items()
    ):
        raise bad_request('"environment" must be an object of strings')
    if not isinstance(log_limit, int) or isinstance(log_limit, bool) or log_limit < 0:
        raise bad_request('"log_limit" must be a non-negative integer')
    if asked is not None and (not isinstance(asked, int) or isinstance(asked, bool) or asked < 1):
        raise bad_request('"protocol" must be a positive integer (the highest the node speaks)')
    return InitRequest(
        code=Path(code_dir) if code_dir is not None else code,
        entry=entry,
        environment=environment,
        log_limit=log_limit,
        layer_dir=None if layer_dir is None else Path(layer_dir),
        protocol=PROTOCOL if asked is None else agreed_protocol(asked),
    )


def agreed_protocol(asked: int) -> int:
    """The highest version both this server and a node that speaks up to `asked` speak (when
    there is none, this server's lowest, which the node then refuses)."""
    common = [version for version in PROTOCOLS if version <= asked]
    return max(common) if common else min(PROTOCOLS)


def parse_run(body: Any) -> tuple[Any, Context]:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    deadline = body.get("deadline")
    version = body.get("function_version", 0)
    if deadline is not None and (
        not isinstance(deadline, int | float) or isinstance(deadline, bool)
    ):
        raise bad_request('"deadline" must be a number (unix seconds)')
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad_request('"function_version" must be an integer')
    strings = {}
    for key in ("execution_id", "function_id", "function_name"):
        value = body.get(key) or ""
        if not isinstance(value, str):
            raise bad_request(f'"{key}" must be a string')
        strings[key] = value
    context = Context(
        execution_id=strings["execution_id"],
        function_id=strings["function_id"],
        function_name=strings["function_name"],
        function_version=version,
        deadline=None if deadline is None else float(deadline),
    )
    return body.get("input"), context


def bad_request(message: str) -> RequestError:
    return RequestError(400, "BadRequest", message)


# --- HTTP --------------------------------------------------------------------------------------


class Headers(dict[str, str]):
    """Request headers by lower-cased name (the last of a repeated one wins)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class RequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; JSON in, JSON out, one write per response."""

    protocol_version = "HTTP/1.1"
    server: RuntimeServer

    def parse_request(self) -> bool:
        """The request line and headers. The standard library's parser goes through the
        `email` package, which costs a small function's run again; the control plane sends
        a few plain headers, and anything else gets a JSON error."""
        self.command = None  # type: ignore[assignment]
        self.close_connection = True
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        words = line.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400, f"Bad request syntax ({line!r})")
            return False
        self.command, self.path, self.request_version = words
        headers = Headers()
        for _ in range(MAX_HEADERS):
            raw = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(raw) > MAX_HEADER_LINE:
                self.send_error(431, "Line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = str(raw, "iso-8859-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        return True

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def dispatch(self, method: str) -> None:
        try:
            body = self.read_body()
            path = self.path.partition("?")[0]
            if path == "/health" and method == "GET":
                status, reply = self.server.runtime.health()
                self.respond_json(status, reply)
            elif path == "/init" and method == "POST":
                status, reply = self.server.runtime.init(parse_json(body))
                self.respond_json(status, reply)
            elif path == "/run" and method == "POST":
                self.run(parse_json(body))
            elif path in ("/health", "/init", "/run"):
                raise RequestError(405, "MethodNotAllowed", f"{method} {path} is not allowed")
            else:
                raise RequestError(404, "NotFound", f"no such endpoint: {path}")
        except RequestError as exc:
            if exc.close:
                self.close_connection = True
            self.respond_json(exc.status, {"error": exc.as_error()})
        except Exception as exc:  # a bug here must not take the server down
            self.respond_json(500, {"error": describe_exception(exc)})

    def run(self, body: Any) -> None:
        runtime = self.server.runtime
        if not runtime.streams:
            self.respond(200, runtime.run(body))
            return
        frames = FrameWriter(self.wfile.write, self.head(200, "application/x-ndjson", None))
        try:
            runtime.stream_run(body, frames)
        except Exception:
            if not frames.started:
                raise  # answered as JSON: a refusal (409, 400), or a bug (500)
            self.close_connection = True  # mid-body: nothing can be said on this connection

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "LengthRequired", "send a Content-Length", close=True)
        raw_length = self.headers.get("Content-Length", "0")
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0:
            raise RequestError(400, "BadRequest", "invalid Content-Length", close=True)
        if length > MAX_BODY:
            raise RequestError(413, "TooLarge", "the request body is too large", close=True)
        return self.rfile.read(length)

    def respond_json(self, status: int, reply: dict[str, Any]) -> None:
        self.respond(status, json.dumps(reply).encode())

    def respond(self, status: int, body: bytes) -> None:
        """Status line, headers and body in a single write."""
        self.wfile.write(self.head(status, "application/json", len(body)) + body)

    def head(self, status: int, content_type: str, length: int | None) -> bytes:
        """Status line and headers; without a `length`, the body is chunked."""
        phrase = http.HTTPStatus(status).phrase
        head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\n"
        if length is None:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += f"Content-Length: {length}\r\n"
        if self.close_connection:
            head += "Connection: close\r\n"
        return head.encode("ascii") + b"\r\n"

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unknown method) as JSON too."""
        self.close_connection = True  # the request may not have been read to its end
        error = {"type": http.HTTPStatus(code).phrase.replace(" ", ""), "message": message or ""}
        self.respond_json(code, {"error": {**error, "traceback": ""}})

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "unix"


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "BadRequest", f"the body is not valid JSON: {exc}") from exc


class RuntimeServer(socketserver.UnixStreamServer):
    """One connection at a time, one request at a time."""

    def __init__(self, socket_path: str, runtime: Runtime) -> None:
        self.runtime = runtime
        prepare_socket_path(socket_path)
        old_umask = os.umask(0o111)  # created connectable by the host (another uid)
        try:
            super().__init__(socket_path, RequestHandler)
        finally:
            os.umask(old_umask)
        os.chmod(socket_path, 0o666)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Only connection errors get here (the handler answers everything else): the client
        # went away; nothing to report.
        pass


def prepare_socket_path(socket_path: str) -> None:
    path = Path(socket_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # left over by an earlier server


def exit_on_signal(socket_path: str) -> None:
    """SIGTERM/SIGINT end the server at once, even inside the function's code (and as PID 1)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main() -> None:
    socket_path = os.environ.get("SPINLET_SOCKET") or DEFAULT_SOCKET
    make_std_streams_unbuffered()
    exit_on_signal(socket_path)
    with RuntimeServer(socket_path, Runtime()) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
