"""How many containers each function keeps initialised across the fleet (scale_up/scale_down):
the count is stored on the function; the nodes honour it (`services/workers.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, select, update

from spinlet.errors import NotFound
from spinlet.store.database import Database
from spinlet.store.tables import functions


@dataclass(frozen=True)
class Provisioned:
    """A function the fleet keeps `count` containers initialised for."""

    project_id: str
    function_id: str
    count: int


class ScalingRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def scale(self, project_id: str, function_id: str, delta: int | None) -> int:
        """Add `delta` (negative: take away, never below 0) to the function's count, or set it
        to 0 (`delta` None); the new count."""
        row = (functions.c.project_id == project_id) & (functions.c.id == function_id)
        value: Any = 0
        if delta is not None:
            total = functions.c.provisioned + delta
            value = case((total < 0, 0), else_=total)

        def scale(conn: Connection) -> int:
            if not conn.execute(update(functions).where(row).values(provisioned=value)).rowcount:
                raise NotFound(f"function {function_id!r} not found")
            count = conn.execute(select(functions.c.provisioned).where(row)).scalar_one()
            return int(count)

        return await self.db.write(scale)

    async def count(self, project_id: str, function_id: str) -> int:
        row = (functions.c.project_id == project_id) & (functions.c.id == function_id)
        query = select(functions.c.provisioned).where(row)
        found = await self.db.read(lambda conn: conn.execute(query).scalar_one_or_none())
        return int(found or 0)

    async def wanted(self) -> list[Provisioned]:
        """Every function with a count above 0."""
        query = (
            select(functions.c.project_id, functions.c.id, functions.c.provisioned)
            .where(functions.c.provisioned > 0)
            .order_by(functions.c.id)
        )
        rows = await self.db.read(lambda conn: list(conn.execute(query)))
        return [Provisioned(row.project_id, row.id, int(row.provisioned)) for row in rows]
