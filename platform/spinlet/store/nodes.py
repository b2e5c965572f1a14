"""Nodes and their heartbeats: how the nodes sharing a store know which of them still live."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from spinlet.store.database import Database
from spinlet.store.tables import nodes


class NodeRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def heartbeat(
        self, node_id: str, now: datetime, report: dict[str, Any] | None = None
    ) -> None:
        """Record that the node lives (registering it on its first beat), with what it
        publishes (`report`: its workers, capacity and runtimes; kept when None)."""
        values: dict[str, Any] = {"heartbeat_at": now}
        if report is not None:
            values["report"] = report

        def beat(conn: Connection) -> None:
            seen = conn.execute(update(nodes).where(nodes.c.id == node_id).values(**values))
            if not seen.rowcount:
                conn.execute(insert(nodes).values(id=node_id, started_at=now, **values))

        await self.db.write(beat)

    async def alive(self, since: datetime) -> list[str]:
        """The nodes that beat at `since` or later."""
        query = select(nodes.c.id).where(nodes.c.heartbeat_at >= since).order_by(nodes.c.id)
        return await self.db.read(lambda conn: list(conn.execute(query).scalars()))

    async def reports(self, since: datetime) -> dict[str, dict[str, Any]]:
        """What the nodes that beat at `since` or later published, by node id."""
        query = select(nodes.c.id, nodes.c.report).where(nodes.c.heartbeat_at >= since)
        rows = await self.db.read(lambda conn: list(conn.execute(query)))
        return {row.id: dict(row.report or {}) for row in rows}
