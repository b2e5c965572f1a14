"""Following the Docker engine's `die` and `oom` events for one node's containers.

The event stream is a blocking HTTP response, so it is read by one thread of its own (not one of
the driver's pool threads, which it would hold forever); each event is handed to the event loop
with `call_soon_threadsafe`. When the stream breaks (the engine restarted) the thread reconnects
with a backoff, asking for the events since the last one it saw. `stop()` closes the stream's
socket, which ends the blocking read at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Executor
from typing import Any

from spinlet.runtime.driver import ExitListener, ExitReason

log = logging.getLogger(__name__)

RETRY_FIRST = 0.5  # seconds before reconnecting a broken stream, doubled up to RETRY_MAX
RETRY_MAX = 30.0
JOIN_TIMEOUT = 5.0


class DockerEventWatch:
    """A thread that reports this node's containers stopping to `listener`, on `loop`."""

    def __init__(
        self,
        client: Any,  # a docker.DockerClient
        node_label: str,
        node_id: str,
        loop: asyncio.AbstractEventLoop,
        listener: ExitListener,
    ) -> None:
        self._client = client
        self._filters = {
            "label": f"{node_label}={node_id}",
            "type": "container",
            "event": ["die", "oom"],
        }
        self._loop = loop
        self._listener = listener
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread = threading.Thread(
            target=self._follow, name=f"spinlet-docker-events-{node_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    async def stop(self, executor: Executor) -> None:
        """Close the stream and wait for the thread to end (off the event loop)."""
        await self._loop.run_in_executor(executor, self._stop_sync)

    def _stop_sync(self) -> None:
        self._stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            _interrupt(stream)
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT)

    # -- the thread --------------------------------------------------------------------------

    def _follow(self) -> None:
        since: int | None = None
        delay = RETRY_FIRST
        while not self._stopping.is_set():
            try:
                stream = self._client.api.events(decode=True, filters=self._filters, since=since)
            except Exception as exc:
                log.warning("cannot follow Docker events (retrying in %g s): %s", delay, exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            with self._lock:
                self._stream = stream
            if self._stopping.is_set():  # stop() ran before the stream was published
                _interrupt(stream)
            try:
                for event in stream:
                    delay = RETRY_FIRST
                    since = _int_or(event.get("time"), since)
                    self._deliver(event)
            except Exception as exc:  # a stream cut mid-event; stop() ends it without one
                if not self._stopping.is_set():
                    log.warning("the Docker event stream failed: %s", exc)
            finally:
                with self._lock:
                    self._stream = None
                _close(stream)
            if not self._stopping.is_set():
                log.warning("the Docker event stream ended; reconnecting in %g s", delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _deliver(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        action = event.get("Action") or event.get("status")
        actor = event.get("Actor")
        container_id = event.get("id") or (actor.get("ID") if isinstance(actor, dict) else None)
        if action not in ("die", "oom") or not isinstance(container_id, str):
            return
        reason: ExitReason = "oom" if action == "oom" else "crashed"
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(self._listener, container_id, reason)


def _interrupt(stream: Any) -> None:
    """Shut a `CancellableStream`'s socket down: a read blocked on it ends at once."""
    with contextlib.suppress(Exception):
        stream.close()


def _close(stream: Any) -> None:
    """Interrupt a stream and release its response (no unclosed socket left to warn about)."""
    _interrupt(stream)
    with contextlib.suppress(Exception):
        stream._response.close()


def _int_or(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) else default
