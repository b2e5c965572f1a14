"""Query strings of execution lists (`field=op:value` filters, sorting, paging) as the
`spinlet.queries` values the store lists by."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from multidict import MultiMapping

from spinlet.api.schemas import MAX_WHOLE
from spinlet.domain import ExecutionStatus
from spinlet.errors import ValidationFailed
from spinlet.queries import FILTER_FIELDS, OPS, SORT_FIELDS, Direction, ExecutionQuery, Filter, Op

MAX_PAGE = 1000
TRUE = ("1", "true", "yes", "on")


def whole_number(text: str, name: str, *, low: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValidationFailed(f"{name} must be a whole number") from None
    if not low <= value <= MAX_WHOLE:
        raise ValidationFailed(f"{name} must be between {low} and {MAX_WHOLE}")
    return value


def flag(params: MultiMapping[str], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValidationFailed(f"{name} must be true or false")


def parse_time(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{name}: {text!r} is not an ISO-8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _value(field: str, text: str) -> Any:
    if text == "null":
        return None
    if field == "function_version":
        return whole_number(text, field)
    if field in ("created_at", "finished_at"):
        return parse_time(text, field)
    if field == "status":
        try:
            return ExecutionStatus(text).value
        except ValueError:
            allowed = ", ".join(s.value for s in ExecutionStatus)
            raise ValidationFailed(f"status must be one of {allowed}") from None
    return text


def parse_filter(field: str, raw: str) -> Filter:
    op: Op = "eq"
    head, sep, rest = raw.partition(":")
    if sep and head in OPS:
        op, raw = head, rest
    if op in ("in", "nin"):
        return Filter(field, op, [_value(field, part) for part in raw.split(",") if part])
    if op == "has":
        return Filter(field, op, raw)
    return Filter(field, op, _value(field, raw))


def _sort(params: MultiMapping[str]) -> tuple[tuple[str, Direction], ...]:
    keys = [k for k in params.get("sort_keys", "created_at").split(",") if k]
    dirs = [d for d in params.get("sort_dirs", "").split(",") if d]
    sort: list[tuple[str, Direction]] = []
    for index, key in enumerate(keys):
        if key not in SORT_FIELDS:
            raise ValidationFailed(f"sort_keys: {key!r} is not one of {', '.join(SORT_FIELDS)}")
        direction = dirs[index] if index < len(dirs) else (dirs[-1] if dirs else "desc")
        if direction not in ("asc", "desc"):
            raise ValidationFailed("sort_dirs must be asc or desc")
        sort.append((key, cast(Direction, direction)))
    return tuple(sort)


UUID_HYPHENS = (8, 12, 16, 20)  # where a UUID's hyphens go, counted in hex digits


def _uuid_shaped(digits: str) -> str:
    """Hex digits with hyphens where a UUID has them: `38eda13e12` -> `38eda13e-12`."""
    for position in reversed(UUID_HYPHENS):
        if len(digits) > position:
            digits = f"{digits[:position]}-{digits[position:]}"
    return digits


def id_prefix(text: str) -> tuple[Filter, ...]:
    """`id_prefix=38eda13e`: the executions whose id starts so, as a range over the primary
    key (`prefix <= id < next prefix`), so that it stays an index range at any size. The prefix
    is put in a UUID's shape first (hyphens optional), which also keeps the range right under
    any collation, since every bound then has its hyphens where the ids have theirs."""
    digits = text.replace("-", "").lower()
    if not digits or len(digits) > 32 or any(c not in "0123456789abcdef" for c in digits):
        raise ValidationFailed("id_prefix must be the start of an id: 1 to 32 hexadecimal digits")
    low = Filter("id", "gte", _uuid_shaped(digits))
    following = int(digits, 16) + 1
    if following >= 16 ** len(digits):  # ffff…: no upper bound
        return (low,)
    return low, Filter("id", "lt", _uuid_shaped(f"{following:0{len(digits)}x}"))


def execution_query(project_id: str | None, params: MultiMapping[str]) -> ExecutionQuery:
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise ValidationFailed("limit must be a whole number") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}")
    filters = tuple(
        parse_filter(field, value) for field in FILTER_FIELDS for value in params.getall(field, [])
    )
    if params.get("id_prefix"):
        filters += id_prefix(params["id_prefix"])
    return ExecutionQuery(
        project_id=project_id,
        filters=filters,
        sort=_sort(params),
        limit=limit,
        marker=params.get("marker") or None,
        include_output=flag(params, "include_output", False),
        include_completed=flag(params, "include_completed", True),
    )
