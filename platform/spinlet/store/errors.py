"""Translating database errors into Spinlet's errors, at the store's boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import IntegrityError

from spinlet.errors import AlreadyExists


@asynccontextmanager
async def unique(what: str, name: str) -> AsyncIterator[None]:
    """Turn a unique-constraint violation into `AlreadyExists` naming the object."""
    try:
        yield
    except IntegrityError as exc:
        raise AlreadyExists(f"{what} {name!r} already exists") from exc
