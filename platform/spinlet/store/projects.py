"""Projects: every row belongs to one. Tokens and project management come later."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from spinlet.domain import utcnow
from spinlet.store.database import Database
from spinlet.store.tables import projects


class ProjectRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure(self, project_id: str, name: str) -> None:
        try:
            async with self.db.transaction() as conn:
                known = await conn.execute(select(projects.c.id).where(projects.c.id == project_id))
                if known.first() is None:
                    await conn.execute(
                        projects.insert().values(id=project_id, name=name, created_at=utcnow())
                    )
        except IntegrityError:  # another node starting at the same time made it
            pass
