"""The store: one database and its repositories."""

from __future__ import annotations

from sqlalchemy import text

from spinlet.store.aliases import AliasRepository
from spinlet.store.blobs import BlobRepository
from spinlet.store.database import DEFAULT_POOL_SIZE, Database
from spinlet.store.executions import ExecutionRepository
from spinlet.store.functions import FunctionRepository
from spinlet.store.jobs import JobRepository
from spinlet.store.layers import LayerRepository
from spinlet.store.nodes import NodeRepository
from spinlet.store.projects import ProjectRepository
from spinlet.store.runtimes import RuntimeRepository
from spinlet.store.scaling import ScalingRepository
from spinlet.store.tokens import TokenRepository
from spinlet.store.versions import VersionRepository
from spinlet.store.webhooks import WebhookRepository


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.projects = ProjectRepository(db)
        self.runtimes = RuntimeRepository(db)
        self.functions = FunctionRepository(db)
        self.layers = LayerRepository(db)
        self.versions = VersionRepository(db)
        self.aliases = AliasRepository(db)
        self.executions = ExecutionRepository(db)
        self.jobs = JobRepository(db)
        self.nodes = NodeRepository(db)
        self.blobs = BlobRepository(db)
        self.tokens = TokenRepository(db)
        self.webhooks = WebhookRepository(db)
        self.scaling = ScalingRepository(db)

    @classmethod
    async def open(cls, url: str, *, pool_size: int | None = None) -> Store:
        """The store at `url`, migrated; `pool_size` connections at most (PostgreSQL)."""
        db = Database(url, pool_size=pool_size or DEFAULT_POOL_SIZE)
        await db.migrate()
        return cls(db)

    async def ping(self) -> None:
        """A round trip to the database (`StoreUnavailable` when it cannot be reached)."""
        await self.db.read(lambda conn: conn.execute(text("SELECT 1")).scalar())

    async def close(self) -> None:
        await self.db.close()
