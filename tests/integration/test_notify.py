"""Nodes keep hearing each other after their connections to PostgreSQL drop (a restart of the
database, a proxy's timeout): announcements flow again without restarting the node."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import make_url

from spinlet.store.notify import FINISHED, QUEUED, Notifier
from tests.helpers import eventually

pytestmark = pytest.mark.postgres


class Heard:
    def __init__(self) -> None:
        self.queued = 0
        self.finished: list[str] = []

    def on_queued(self) -> None:
        self.queued += 1

    def on_finished(self, execution_id: str) -> None:
        self.finished.append(execution_id)


def dsn(database_url: str, database: str | None = None) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    return url.set(database=database or url.database).render_as_string(hide_password=False)


async def restart_like(database_url: str, down: float) -> int:
    """What a restart of PostgreSQL does to the database's clients: every backend ends, and
    for `down` seconds no new connection is let in. Returns how many backends were ended."""
    name = make_url(database_url).database
    admin = await asyncpg.connect(dsn(database_url, "postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        ended: int = await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1) AS ended",
            name,
        )
        await asyncio.sleep(down)
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        return ended
    finally:
        await admin.close()


async def test_announcements_flow_again_after_the_connections_drop(fresh_postgres: str) -> None:
    sender, listener = Notifier(fresh_postgres), Notifier(fresh_postgres)
    heard = Heard()
    await sender.start(lambda: None, lambda _id: None)
    await listener.start(heard.on_queued, heard.on_finished)
    try:
        await sender.send(FINISHED, "before")

        async def heard_before() -> bool:
            return heard.finished == ["before"]

        await eventually(heard_before, within=5)

        # Two listening, one sending; the listener tries again, refused, while it is down.
        assert await restart_like(fresh_postgres, down=1.0) == 3
        assert not listener.listening

        async def listening_again() -> bool:
            # Once listening again, the node looks for work queued while it heard nothing.
            return heard.queued == 1 and listener.listening

        await eventually(listening_again, within=10)

        await sender.send(FINISHED, "after")  # its sending connection dropped too
        await sender.send(QUEUED)

        async def heard_after() -> bool:
            return heard.finished == ["before", "after"] and heard.queued == 2

        await eventually(heard_after, within=5)
    finally:
        await sender.stop()
        await listener.stop()
