"""Serialising the changes that must see one another: a function's versions and aliases.

Publishing, deleting a version, pointing an alias and deleting a function all start by locking
the function's row, so that a check ("no alias uses this version") and the change that relies on
it happen as one step. The lock is a write that changes nothing: PostgreSQL locks the row until
the transaction ends, SQLite takes its single write lock (waiting for it, up to its busy
timeout, instead of failing later when a read-then-write transaction would need to upgrade).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from spinlet.store.tables import functions


async def lock_function(conn: AsyncConnection, project_id: str, function_id: str) -> bool:
    """Lock a function's row until the transaction ends; False when it does not exist."""
    result = await conn.execute(
        update(functions)
        .where(functions.c.id == function_id)
        .where(functions.c.project_id == project_id)
        .values(latest_version=functions.c.latest_version)
    )
    return bool(result.rowcount)
