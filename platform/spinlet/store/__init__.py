"""Persistence: the only layer that touches SQLAlchemy."""

from spinlet.store.database import Database
from spinlet.store.queries import ExecutionQuery, Filter
from spinlet.store.store import Store

__all__ = ["Database", "ExecutionQuery", "Filter", "Store"]
