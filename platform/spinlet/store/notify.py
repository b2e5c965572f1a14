"""Announcements between the nodes sharing a PostgreSQL store, over LISTEN/NOTIFY.

Two channels: `spinlet_queued` (work was queued: idle dispatchers claim it at once) and
`spinlet_finished` (payload: an execution id; `?wait=` answers at once on any node); and
`spinlet_scheduled` (a job or a scheduled execution changed: schedulers look at their next
due time again), listened to with `on`. A node
listens on one connection of its own and sends on another; it also hears its own
announcements, which is harmless. Nothing depends on a notification arriving: dispatchers
also poll, and waiters re-read the store every second. On SQLite (one node) this is a no-op.

Either connection may drop (PostgreSQL restarted, a proxy timed out, the backend terminated).
The listening one is made again in the background, with growing pauses, and once it is back
the dispatcher is woken for what was queued meanwhile; the sending one is made again on the
next announcement (those within `SEND_PAUSE` of a failure are dropped, not queued behind
connection attempts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import make_url

log = logging.getLogger(__name__)

QUEUED = "spinlet_queued"
FINISHED = "spinlet_finished"
SCHEDULED = "spinlet_scheduled"

#: Pauses between attempts to listen again: the first, and the longest.
RECONNECT_FIRST = 0.2
RECONNECT_MAX = 5.0
#: How long making a connection, or sending on one, may take (a database behind a network
#: partition answers nothing; a refused one fails at once).
CONNECT_TIMEOUT = 5.0
#: After a failed announcement, the next ones are dropped for this long instead of each waiting
#: for a connection of its own.
SEND_PAUSE = 1.0


class Notifier:
    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.enabled = parsed.get_backend_name() == "postgresql"
        self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._listen: Any = None
        self._send: Any = None
        self._lock = asyncio.Lock()
        self._on_queued: Callable[[], None] = lambda: None
        self._on_finished: Callable[[str], None] = lambda _id: None
        self._channels: dict[str, Callable[[str], None]] = {}
        self._relisten: asyncio.Task[None] | None = None
        self._stopped = False
        self._send_resumes = 0.0  # monotonic: no announcement is sent before

    @property
    def listening(self) -> bool:
        return self._listen is not None and not self._listen.is_closed()

    def on(self, channel: str, heard: Callable[[str], None]) -> None:
        """Listen to `channel` too (`heard` gets each payload); call before `start`."""
        self._channels[channel] = heard

    async def start(
        self, on_queued: Callable[[], None], on_finished: Callable[[str], None]
    ) -> None:
        if not self.enabled:
            return
        self._on_queued, self._on_finished = on_queued, on_finished
        await self._start_listening()

    async def _start_listening(self) -> None:
        conn = await self._connect()
        try:
            await conn.add_listener(QUEUED, lambda *_: self._on_queued())
            await conn.add_listener(FINISHED, lambda *args: self._on_finished(args[3]))
            for channel, heard in self._channels.items():
                await conn.add_listener(channel, _payload_to(heard))
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._lost)
        self._listen = conn

    def _lost(self, _conn: Any) -> None:
        if self._stopped or self._relisten is not None:
            return
        log.warning("the LISTEN connection to PostgreSQL dropped; listening again")
        self._relisten = asyncio.create_task(self._listen_again(), name="spinlet-relisten")

    async def _listen_again(self) -> None:
        pause = RECONNECT_FIRST
        try:
            while True:
                try:
                    await self._start_listening()
                    break
                except Exception as exc:  # refused, the server still starting, …
                    log.warning(
                        "could not listen again (%s: %s); next try in %g s",
                        type(exc).__name__,
                        exc,
                        pause,
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX)
        finally:
            self._relisten = None
        log.info("listening to PostgreSQL again")
        self._on_queued()  # what was queued while nothing listened

    async def send(self, channel: str, payload: str = "") -> None:
        """Announce to every node (best effort: a failure is logged, not raised)."""
        if not self.enabled or self._stopped:
            return
        async with self._lock:
            if time.monotonic() < self._send_resumes:
                return  # it just failed: announcements wait behind no connect attempt
            for attempt in (1, 2):  # a connection that dropped since the last one: a new one
                try:
                    if self._send is None or self._send.is_closed():
                        self._send = await self._connect()
                    await self._send.execute(
                        "SELECT pg_notify($1, $2)", channel, payload, timeout=CONNECT_TIMEOUT
                    )
                    return
                except Exception as exc:  # the store is still the truth; pollers catch up
                    if self._send is not None:
                        self._send.terminate()
                        self._send = None
                    if attempt == 2:
                        self._send_resumes = time.monotonic() + SEND_PAUSE
                        log.warning(
                            "could not notify the other nodes (%s): %s; not trying for %g s",
                            channel,
                            exc,
                            SEND_PAUSE,
                        )

    async def _connect(self) -> Any:
        import asyncpg

        return await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)

    async def stop(self) -> None:
        self._stopped = True
        if self._relisten is not None:
            self._relisten.cancel()
            await asyncio.gather(self._relisten, return_exceptions=True)
        for conn in (self._listen, self._send):
            if conn is not None and not conn.is_closed():
                await conn.close()
        self._listen = self._send = None


def _payload_to(heard: Callable[[str], None]) -> Callable[..., None]:
    """An asyncpg listener (connection, pid, channel, payload) that passes the payload on, and
    logs what it raises (a listener's exception would be lost)."""

    def listener(*args: Any) -> None:
        try:
            heard(args[3])
        except Exception:
            log.exception("a notification on %s could not be handled", args[2])

    return listener
