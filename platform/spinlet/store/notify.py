"""Announcements between the nodes sharing a PostgreSQL store, over LISTEN/NOTIFY.

Two channels: `spinlet_queued` (work was queued: idle dispatchers claim it at once) and
`spinlet_finished` (payload: an execution id; `?wait=` answers at once on any node). A node
listens on one connection of its own and sends on another; it also hears its own
announcements, which is harmless. Nothing depends on a notification arriving: dispatchers
also poll, and waiters re-read the store every second. On SQLite (one node) this is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import make_url

log = logging.getLogger(__name__)

QUEUED = "spinlet_queued"
FINISHED = "spinlet_finished"


class Notifier:
    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.enabled = parsed.get_backend_name() == "postgresql"
        self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._listen: Any = None
        self._send: Any = None
        self._lock = asyncio.Lock()

    async def start(
        self, on_queued: Callable[[], None], on_finished: Callable[[str], None]
    ) -> None:
        if not self.enabled:
            return
        import asyncpg

        self._listen = await asyncpg.connect(self._dsn)
        self._send = await asyncpg.connect(self._dsn)
        await self._listen.add_listener(QUEUED, lambda *_: on_queued())
        await self._listen.add_listener(FINISHED, lambda *args: on_finished(args[3]))

    async def send(self, channel: str, payload: str = "") -> None:
        """Announce to every node (best effort: a failure is logged, not raised)."""
        if self._send is None:
            return
        try:
            async with self._lock:
                await self._send.execute("SELECT pg_notify($1, $2)", channel, payload)
        except Exception as exc:  # the store is still the truth; pollers catch up
            log.warning("could not notify the other nodes (%s): %s", channel, exc)

    async def stop(self) -> None:
        for conn in (self._listen, self._send):
            if conn is not None:
                await conn.close()
        self._listen = self._send = None
