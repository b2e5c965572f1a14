"""What a listing of executions asks for: plain values that the API parses from a query string
(`api/filters.py`) and the store turns into SQL (`store/queries.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from spinlet.domain import ExecutionStatus

Op = Literal["eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "has"]
OPS: tuple[Op, ...] = ("eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "has")
Direction = Literal["asc", "desc"]

#: Fields a list may filter on, and those it may sort on (never NULL, so keysets are simple).
FILTER_FIELDS = (
    "function_id",
    "function_name",
    "function_version",
    "function_alias",
    "webhook_id",
    "status",
    "description",
    "created_at",
    "finished_at",
    "job_id",
)
SORT_FIELDS = ("created_at", "status", "function_id", "function_name", "function_version")


@dataclass(frozen=True)
class Filter:
    field: str
    op: Op
    value: Any  # a list for in/nin; None: the field has no value


@dataclass(frozen=True)
class ExecutionQuery:
    """Which executions to list: filtered, sorted (newest first by default), paged by marker."""

    project_id: str | None  # None: every project's (an admin's `all_projects`)
    function_id: str | None = None
    statuses: tuple[ExecutionStatus, ...] = ()
    filters: tuple[Filter, ...] = ()
    sort: tuple[tuple[str, Direction], ...] = (("created_at", "desc"),)
    limit: int = 100
    marker: str | None = None  # the id of the previous page's last execution
    include_output: bool = False
    include_completed: bool = True

    @property
    def ordering(self) -> tuple[tuple[str, Direction], ...]:
        """The sort, with ties broken by id (in the last key's direction)."""
        return (*self.sort, ("id", self.sort[-1][1] if self.sort else "desc"))
