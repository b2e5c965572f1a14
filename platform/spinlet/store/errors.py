"""Translating database errors into Spinlet's errors, at the store's boundary."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError

from spinlet.errors import AlreadyExists, StoreUnavailable

log = logging.getLogger(__name__)

#: SQLite's primary result codes for a database another connection holds (the extended codes
#: carry them in their low byte).
_SQLITE_LOCKED_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


@asynccontextmanager
async def unique(what: str, name: str) -> AsyncIterator[None]:
    """Turn a unique-constraint violation into `AlreadyExists` naming the object."""
    try:
        yield
    except IntegrityError as exc:
        raise AlreadyExists(f"{what} {name!r} already exists") from exc


def sqlite_locked(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database is locked": another process held the file for
    longer than the busy timeout."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    code = getattr(orig, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _SQLITE_LOCKED_CODES


def locked_unavailable(exc: BaseException) -> StoreUnavailable:
    """The `StoreUnavailable` (503, with Retry-After) a locked SQLite file is: the same request
    works once the other process lets go of it."""
    log.warning("the SQLite database is locked by another process: %s", exc)
    return StoreUnavailable(
        "the database is locked by another process; try again shortly", retry_after=1
    )


@asynccontextmanager
async def lock_translated() -> AsyncIterator[None]:
    """Turn SQLite's "database is locked" into `StoreUnavailable`."""
    try:
        yield
    except DBAPIError as exc:
        if not sqlite_locked(exc):
            raise
        raise locked_unavailable(exc) from exc
