"""Runtimes: which image runs a function's code."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, Row, bindparam, delete, exists, or_, select, update

from spinlet.domain import Runtime, RuntimeStatus, utcnow
from spinlet.errors import NotFound
from spinlet.store.database import Database
from spinlet.store.errors import unique
from spinlet.store.tables import function_versions, functions, runtimes

# Every execution looks its runtime up: the statement is built once.
_PROJECT: BindParameter[str] = bindparam("project_id")
_REF: BindParameter[str] = bindparam("ref")
_FIND = (
    select(runtimes)
    .where(or_(runtimes.c.project_id == _PROJECT, runtimes.c.is_public.is_(True)))
    .where(or_(runtimes.c.id == _REF, runtimes.c.name == _REF))
    .order_by((runtimes.c.id == _REF).desc(), (runtimes.c.project_id == _PROJECT).desc())
    .limit(1)
)


def _runtime(row: Row[Any]) -> Runtime:
    return Runtime(
        id=row.id,
        name=row.name,
        image=row.image,
        description=row.description,
        status=RuntimeStatus.read(row.status),
        is_public=row.is_public,
        trusted=row.trusted,
        project_id=row.project_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class RuntimeRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _visible(project_id: str) -> Any:
        return or_(runtimes.c.project_id == project_id, runtimes.c.is_public.is_(True))

    async def create(self, runtime: Runtime) -> Runtime:
        async with unique("runtime", runtime.name), self.db.transaction() as conn:
            await conn.execute(
                runtimes.insert().values(
                    id=runtime.id,
                    project_id=runtime.project_id,
                    name=runtime.name,
                    image=runtime.image,
                    description=runtime.description,
                    status=runtime.status.value,
                    is_public=runtime.is_public,
                    trusted=runtime.trusted,
                    created_at=runtime.created_at,
                    updated_at=runtime.updated_at,
                )
            )
        return runtime

    async def find(self, project_id: str, ref: str) -> Runtime | None:
        """A runtime visible to the project, by id or by name (own runtimes first)."""
        params = {"project_id": project_id, "ref": ref}
        row = await self.db.read(lambda conn: conn.execute(_FIND, params).first())
        return _runtime(row) if row else None

    async def find_by_id(self, runtime_id: str) -> Runtime | None:
        """A runtime by its id, whatever its project (for the node's own work, never a user's
        lookup: that is `find`, which keeps to what the project sees)."""
        query = select(runtimes).where(runtimes.c.id == runtime_id)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return _runtime(row) if row else None

    async def get(self, project_id: str, ref: str) -> Runtime:
        runtime = await self.find(project_id, ref)
        if runtime is None:
            raise NotFound(f"runtime {ref!r} not found")
        return runtime

    async def list(self, project_id: str) -> list[Runtime]:
        query = select(runtimes).where(self._visible(project_id)).order_by(runtimes.c.created_at)
        async with self.db.connect() as conn:
            return [_runtime(row) for row in await conn.execute(query)]

    async def update(self, runtime: Runtime) -> Runtime:
        runtime = runtime.evolve(updated_at=utcnow())
        known = runtime.status is not RuntimeStatus.UNKNOWN
        async with unique("runtime", runtime.name), self.db.transaction() as conn:
            await conn.execute(
                update(runtimes)
                .where(runtimes.c.id == runtime.id)
                .values(
                    name=runtime.name,
                    image=runtime.image,
                    description=runtime.description,
                    updated_at=runtime.updated_at,
                    # A status this node does not know (a newer node's) stays as stored.
                    **({"status": runtime.status.value} if known else {}),
                )
            )
        return runtime

    async def in_use(self, runtime_id: str) -> bool:
        """Whether a function or a published version uses the runtime."""
        async with self.db.connect() as conn:
            for table in (functions, function_versions):
                query = select(exists().where(table.c.runtime_id == runtime_id))
                if (await conn.execute(query)).scalar():
                    return True
        return False

    async def delete(self, runtime_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(delete(runtimes).where(runtimes.c.id == runtime_id))
