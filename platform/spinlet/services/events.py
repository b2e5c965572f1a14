"""Notifications: work was queued (wake the dispatcher), an execution finished (wake whoever
waits for it), a job or a scheduled execution changed (wake the scheduler). In this process,
and relayed to the other nodes when a relay is set (PostgreSQL's NOTIFY: `store/notify.py`).
Waiters also re-read the store, so nothing depends on a notification arriving."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from spinlet.store.notify import FINISHED, QUEUED, SCHEDULED

#: Sends `(channel, payload)` to the other nodes.
Relay = Callable[[str, str], Coroutine[Any, Any, None]]


class ExecutionEvents:
    def __init__(self, relay: Relay | None = None) -> None:
        self.queued = asyncio.Event()
        self.scheduled = asyncio.Event()
        self.relay = relay
        self._finished: dict[str, list[asyncio.Future[None]]] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def announce_queued(self) -> None:
        self.heard_queued()
        self._relay(QUEUED, "")

    def announce_finished(self, execution_id: str) -> None:
        self.heard_finished(execution_id)
        self._relay(FINISHED, execution_id)

    def announce_scheduled(self) -> None:
        """A job, or an execution's schedule, was made or changed."""
        self.heard_scheduled()
        self._relay(SCHEDULED, "")

    def heard_scheduled(self, _payload: str = "") -> None:
        """A job or a scheduled execution changed (here or on another node)."""
        self.scheduled.set()

    def heard_queued(self) -> None:
        """Work was queued (here or on another node)."""
        self.queued.set()

    def heard_finished(self, execution_id: str) -> None:
        """An execution finished (here or on another node)."""
        for future in self._finished.pop(execution_id, []):
            if not future.done():
                future.set_result(None)

    def _relay(self, channel: str, payload: str) -> None:
        if self.relay is None:
            return
        task = asyncio.create_task(self.relay(channel, payload), name="spinlet-notify")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def drain(self) -> None:
        """Wait for the announcements still being sent."""
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    async def wait_finished(self, execution_id: str, seconds: float) -> bool:
        """True when the execution was announced finished within `seconds`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finished.setdefault(execution_id, []).append(future)
        try:
            async with asyncio.timeout(seconds):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._finished.get(execution_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
                if not waiters:
                    del self._finished[execution_id]
