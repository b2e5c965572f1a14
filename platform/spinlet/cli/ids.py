"""Ids as people type them: a unique prefix is enough, and function names complete in a shell."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click
from click.shell_completion import CompletionItem

from spinlet.errors import Conflict, NotFound

if TYPE_CHECKING:
    from spinlet.client import Client

_T = TypeVar("_T")

#: What may be the start of an id (a full one is 36 characters).
PREFIX = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{0,34}$")
#: Candidates named when a prefix is ambiguous.
SHOWN = 10
#: Seconds a completion waits for the node: a shell must not hang on a node that is down.
COMPLETION_TIMEOUT = 1.0


def unique(kind: str, prefix: str, ids: list[str], more: bool = False) -> str:
    """The one id in `ids`, else an error naming the candidates."""
    if not ids:
        raise NotFound(f"no {kind} has an id that starts with {prefix!r}")
    if len(ids) > 1:
        shown = ", ".join(ids[:SHOWN]) + (", …" if more or len(ids) > SHOWN else "")
        raise Conflict(
            f"{prefix!r} is the start of several {kind} ids: {shown}; give more of the id"
        )
    return ids[0]


def execution_id(api: Client, ref: str) -> str:
    """The id of the execution whose id is `ref` or starts with it. The node finds the
    candidates (executions are too many to list here)."""
    if not PREFIX.match(ref):
        return ref  # a whole id, or no id at all: the node says which
    found = api.executions.list(id_prefix=ref, limit=SHOWN + 1)
    return unique("execution", ref, [e["id"] for e in found], more=len(found) > SHOWN)


def with_function(api: Client, ref: str, call: Callable[[str], _T]) -> _T:
    """`call(ref)`, where `ref` is a function's name, id or the start of its id: when the node
    knows no function `ref`, it is tried as the start of an id (functions are few: listed)."""
    from spinlet.client import ApiError

    try:
        return call(ref)
    except ApiError as exc:
        if exc.status != 404 or not PREFIX.match(ref):
            raise
        functions = api.functions.list()
        if any(f["name"] == ref for f in functions):
            raise  # the function exists: the 404 is about something else
        ids = [f["id"] for f in functions if f["id"].startswith(ref.lower())]
        if not ids:
            raise
        return call(unique("function", ref, ids))


def complete_functions(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Function names for shell completion, asked of the node (--url, --token or their
    variables); nothing when it does not answer at once."""
    from spinlet.client import Client

    root = ctx.find_root().params
    try:
        with Client(root.get("url"), token=root.get("token"), timeout=COMPLETION_TIMEOUT) as api:
            names = sorted(f["name"] for f in api.functions.list())
    except Exception:  # down, refused, a wrong token: a completion never shows an error
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]
