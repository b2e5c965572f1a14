"""Execution listing: filters, sorting and keyset paging, as SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, and_, false, not_, or_, true

from spinlet.domain import FINAL_STATUSES
from spinlet.store.tables import executions

Op = Literal["eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "has"]
OPS: tuple[Op, ...] = ("eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "has")

#: Fields a list may filter on, and those it may sort on (never NULL, so keysets are simple).
FILTER_FIELDS = (
    "function_id",
    "function_name",
    "function_version",
    "function_alias",
    "status",
    "description",
    "created_at",
    "finished_at",
)
SORT_FIELDS = ("created_at", "status", "function_id", "function_name", "function_version")


@dataclass(frozen=True)
class Filter:
    field: str
    op: Op
    value: Any  # a list for in/nin

    def clause(self) -> Any:
        column = executions.c[self.field]
        match self.op:
            case "eq":
                return column.is_(None) if self.value is None else column == self.value
            # A missing value (no alias, say) is "not equal" to any value, as a user reads it,
            # not SQL's unknown.
            case "neq":
                if self.value is None:
                    return column.is_not(None)
                return or_(column != self.value, column.is_(None))
            case "in":
                return column.in_(self.value)
            case "nin":
                return or_(not_(column.in_(self.value)), column.is_(None))
            case "gt":
                return column > self.value
            case "gte":
                return column >= self.value
            case "lt":
                return column < self.value
            case "lte":
                return column <= self.value
            case "has":
                pattern = str(self.value).replace("\\", "\\\\").replace("%", "\\%")
                # Case-insensitive on both stores (LIKE is, on SQLite only).
                return column.ilike("%" + pattern.replace("_", "\\_") + "%", escape="\\")
        raise AssertionError(self.op)


@dataclass(frozen=True)
class ExecutionQuery:
    """Which executions to list: filtered, sorted (newest first by default), paged by marker."""

    project_id: str | None  # None: every project's (an admin's `all_projects`)
    function_id: str | None = None
    statuses: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    sort: tuple[tuple[str, Literal["asc", "desc"]], ...] = (("created_at", "desc"),)
    limit: int = 100
    marker: str | None = None
    include_output: bool = False
    include_completed: bool = True

    def where(self, stmt: Select[Any]) -> Select[Any]:
        if self.project_id is not None:
            stmt = stmt.where(executions.c.project_id == self.project_id)
        if self.function_id:
            stmt = stmt.where(executions.c.function_id == self.function_id)
        if self.statuses:
            stmt = stmt.where(executions.c.status.in_(self.statuses))
        if not self.include_completed:
            stmt = stmt.where(executions.c.status.not_in([s.value for s in FINAL_STATUSES]))
        for item in self.filters:
            stmt = stmt.where(item.clause())
        return stmt

    def order(self, stmt: Select[Any]) -> Select[Any]:
        keys = [*self.sort, ("id", self.sort[-1][1] if self.sort else "desc")]
        return stmt.order_by(
            *(executions.c[k].desc() if d == "desc" else executions.c[k].asc() for k, d in keys)
        )

    def after(self, marker_row: Any) -> Any:
        """Rows that come after the marker in this order (ties broken by id)."""
        keys = [*self.sort, ("id", self.sort[-1][1] if self.sort else "desc")]
        clause: Any = false()
        equal: Any = true()
        for key, direction in keys:
            column, value = executions.c[key], getattr(marker_row, key)
            beyond = column < value if direction == "desc" else column > value
            clause = or_(clause, and_(equal, beyond))
            equal = and_(equal, column == value)
        return clause
