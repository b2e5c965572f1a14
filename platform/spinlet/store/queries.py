"""Execution listings (`spinlet.queries`) as SQL: filters, sorting and keyset paging."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, false, not_, or_, true

from spinlet.domain import FINAL_STATUSES
from spinlet.queries import ExecutionQuery, Filter
from spinlet.store.tables import executions


def _clause(item: Filter) -> Any:
    column, value = executions.c[item.field], item.value
    match item.op:
        case "eq":
            return column.is_(None) if value is None else column == value
        # A missing value (no alias, say) is "not equal" to any value, as a user reads it,
        # not SQL's unknown.
        case "neq":
            return column.is_not(None) if value is None else or_(column != value, column.is_(None))
        case "in":
            return column.in_(value)
        case "nin":
            return or_(not_(column.in_(value)), column.is_(None))
        case "gt":
            return column > value
        case "gte":
            return column >= value
        case "lt":
            return column < value
        case "lte":
            return column <= value
        case "has":
            pattern = str(value).replace("\\", "\\\\").replace("%", "\\%")
            # Case-insensitive on both stores (LIKE is, on SQLite only).
            return column.ilike("%" + pattern.replace("_", "\\_") + "%", escape="\\")
    raise AssertionError(item.op)


def where(query: ExecutionQuery, stmt: Select[Any]) -> Select[Any]:
    if query.project_id is not None:
        stmt = stmt.where(executions.c.project_id == query.project_id)
    if query.function_id:
        stmt = stmt.where(executions.c.function_id == query.function_id)
    if query.statuses:
        stmt = stmt.where(executions.c.status.in_([s.value for s in query.statuses]))
    if not query.include_completed:
        stmt = stmt.where(executions.c.status.not_in([s.value for s in FINAL_STATUSES]))
    for item in query.filters:
        stmt = stmt.where(_clause(item))
    return stmt


def order(query: ExecutionQuery, stmt: Select[Any]) -> Select[Any]:
    return stmt.order_by(
        *(
            executions.c[k].desc() if d == "desc" else executions.c[k].asc()
            for k, d in query.ordering
        )
    )


def after(query: ExecutionQuery, marker_row: Any) -> Any:
    """Rows that come after the marker in the query's order (ties broken by id)."""
    clause: Any = false()
    equal: Any = true()
    for key, direction in query.ordering:
        column, value = executions.c[key], getattr(marker_row, key)
        beyond = column < value if direction == "desc" else column > value
        clause = or_(clause, and_(equal, beyond))
        equal = and_(equal, column == value)
    return clause
