"""Execution listings (`spinlet.queries`) as SQL: filters, sorting and keyset paging."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, false, not_, or_, true

from spinlet.domain import FINAL_STATUSES, ExecutionStatus
from spinlet.queries import ExecutionQuery, Filter
from spinlet.store.tables import executions

#: The statuses this node knows; `unknown` stands for any other (a newer node's).
_KNOWN = [s.value for s in ExecutionStatus if s is not ExecutionStatus.UNKNOWN]


def _status_in(values: Any) -> Any:
    """Rows in one of these statuses, `unknown` matching the statuses this node does not know."""
    clause: Any = executions.c.status.in_([v for v in values if v != ExecutionStatus.UNKNOWN])
    if ExecutionStatus.UNKNOWN in values:
        clause = or_(clause, executions.c.status.not_in(_KNOWN))
    return clause


def _clause(item: Filter) -> Any:
    column, value = executions.c[item.field], item.value
    if item.field == "status" and item.op in ("eq", "neq", "in", "nin") and value is not None:
        matched = _status_in(value if isinstance(value, list) else [value])
        return matched if item.op in ("eq", "in") else not_(matched)
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
        stmt = stmt.where(_status_in([s.value for s in query.statuses]))
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
