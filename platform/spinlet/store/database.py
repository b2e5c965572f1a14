"""Engine, connection settings and migrations for the store.

The store is chosen by URL: `sqlite+aiosqlite:///path` (the embedded default, WAL mode with
`synchronous=NORMAL`: a committed execution survives a process kill) or
`postgresql+asyncpg://…`.

Two ways in. `transaction()` and `connect()` give an `AsyncConnection`: every statement is an
await. `read(fn)` and `write(fn)` run `fn(conn)` with a synchronous `Connection` in one
transaction: on PostgreSQL through `run_sync` (the same connection pool), on a SQLite file in the
store's own thread with the standard `sqlite3` driver, one hop from the event loop per
transaction, and concurrent writes committed together (`sqlite_thread.py`). The executions hot
path (resolve, create, finish, claim) uses `read`/`write`: measured on this machine, a whole
transaction there takes 0.15 ms against 1.2 ms for one `SELECT 1` through aiosqlite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from spinlet.errors import SpinletError, StoreUnavailable
from spinlet.store.errors import lock_translated, locked_unavailable, sqlite_locked
from spinlet.store.sqlite_thread import SQLiteThread

# The SQLite driver logs every statement with its parameters at DEBUG, environment variable
# values (secrets) among them: its log stays at INFO and above, whatever the root's level.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

DRIVERS = {"sqlite+aiosqlite": "aiosqlite", "postgresql+asyncpg": "asyncpg"}
#: Connections of a node to PostgreSQL (its LISTEN and NOTIFY ones aside).
DEFAULT_POOL_SIZE = 20
MIGRATION_LOCK = 0x5E1E7  # the advisory lock that serialises migrations on PostgreSQL
#: How long a SQLite connection waits for a file another process holds before the request is
#: `StoreUnavailable` ("database is locked").
SQLITE_BUSY_TIMEOUT_MS = 10_000

_T = TypeVar("_T")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


class Database:
    """An async engine plus the few operations every repository needs."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        parsed = make_url(url)
        driver = parsed.drivername
        if driver not in DRIVERS:
            raise SpinletError(
                f"unsupported database URL scheme {driver!r}; use one of {sorted(DRIVERS)}"
            )
        self.url = url
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        #: Made by `migrate`, the first to open the file (off the event loop).
        self._directory: Path | None = None
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                self._directory = Path(parsed.database).parent
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # A fixed number of connections: opening one per burst beyond it (an overflow)
            # costs more than waiting for one, and the nodes share `max_connections`.
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 0
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._thread: SQLiteThread | None = None  # SQLite files: `read`/`write` run there
        if self._write_lock is not None:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            if parsed.database and parsed.database != ":memory:":
                self._thread = SQLiteThread(parsed, _sqlite_pragmas, self._write_lock)

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (a SQLite file's folder made first)."""
        if self._directory is not None:
            await asyncio.to_thread(self._directory.mkdir, parents=True, exist_ok=True)

        def upgrade(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":  # nodes starting together migrate one at a time
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await conn.run_sync(upgrade)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block ends.

        SQLite has a single writer: writers of this process take turns here instead of
        meeting SQLite's busy handler, which sleeps in steps of up to 100 ms.
        """
        if self._write_lock is None:
            async with self._pooled(begin=True) as conn:
                yield conn
            return
        async with self._write_lock, self._pooled(begin=True) as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self._pooled(begin=False) as conn:
            yield conn

    @asynccontextmanager
    async def _pooled(self, *, begin: bool) -> AsyncIterator[AsyncConnection]:
        """A connection of the pool (in a transaction with `begin`). A database that cannot
        be reached, or a connection that drops on the way, is `StoreUnavailable`: the server
        is down or restarting, and the same request will work again once it is back. So is
        a SQLite file another process keeps locked."""
        connected = False
        try:
            async with self.engine.begin() if begin else self.engine.connect() as conn:
                connected = True
                yield conn
        except Exception as exc:
            if sqlite_locked(exc):
                raise locked_unavailable(exc) from exc
            dropped = isinstance(exc, DBAPIError) and exc.connection_invalidated
            if connected and not dropped:
                raise
            log.warning("the database is unreachable: %s", exc)
            raise StoreUnavailable() from exc

    async def read(self, fn: Callable[[Connection], _T]) -> _T:
        """`fn(conn)` in a read transaction (see the module's docstring)."""
        if self._thread is not None:
            async with lock_translated():
                return await self._thread.read(fn)
        async with self.connect() as conn:
            return await conn.run_sync(fn)

    async def write(self, fn: Callable[[Connection], _T]) -> _T:
        """`fn(conn)` in a write transaction, committed (perhaps with other writes) before this
        returns, rolled back when it raises. `fn` must touch nothing but the database: it may
        be run twice (see `sqlite_thread.py`)."""
        if self._thread is not None:
            async with lock_translated():
                return await self._thread.write(fn)
        async with self.transaction() as conn:
            return await conn.run_sync(fn)

    async def close(self) -> None:
        if self._thread is not None:
            await self._thread.close()
        await self.engine.dispose()
