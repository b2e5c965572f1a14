"""Persistence: the only layer that touches SQLAlchemy."""

from spinlet.store.database import Database
from spinlet.store.store import Store

__all__ = ["Database", "Store"]
