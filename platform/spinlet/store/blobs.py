"""Package contents in the database, for the nodes that share it (see `PackageStore`)."""

from __future__ import annotations

import contextlib

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError

from spinlet.store.database import Database
from spinlet.store.tables import package_blobs


class BlobRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, sha256: str, data: bytes) -> None:
        """Store a blob (content-addressed: one already there is the same)."""
        query = select(package_blobs.c.sha256).where(package_blobs.c.sha256 == sha256)

        def write(conn: Connection) -> None:
            if conn.execute(query).first() is None:
                conn.execute(insert(package_blobs).values(sha256=sha256, data=data))

        with contextlib.suppress(IntegrityError):  # another node stored it meanwhile
            await self.db.write(write)

    async def load(self, sha256: str) -> bytes | None:
        query = select(package_blobs.c.data).where(package_blobs.c.sha256 == sha256)
        data = await self.db.read(lambda conn: conn.execute(query).scalar())
        return bytes(data) if data is not None else None

    async def drop(self, sha256: str) -> None:
        statement = delete(package_blobs).where(package_blobs.c.sha256 == sha256)
        await self.db.write(lambda conn: conn.execute(statement))
