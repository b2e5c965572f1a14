"""Printing: rich tables in a terminal, JSON with --json, errors as one unwrapped line.

rich is imported when something is drawn, not when the command starts (`spinlet --help` and
`spinlet invoke` never need it).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

#: Columns shown whole in tables, never cut or folded: ids are what people copy.
WHOLE_COLUMNS = ("id", "function_id", "runtime_id")
#: Where a spinner appears: only for what takes longer than this (seconds).
SPINNER_DELAY = 1.0


@cache
def console() -> Console:
    """stdout; when it is not a terminal, as wide as what is printed (nothing cut at 80)."""
    from rich.console import Console

    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=100_000)


def error(message: str) -> None:
    """`error: message` on stderr, in one line whatever its length (red in a terminal)."""
    click.echo(f"{click.style('error:', fg='red')} {message}", err=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def cell(key: str, value: Any) -> str:
    """A value as a person reads it: durations in ms to two decimals, nothing for None."""
    if value is None:
        return ""
    if key.endswith("_ms") and isinstance(value, int | float):
        return f"{value:.2f}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _short_time(value: Any) -> str:
    """A timestamp in a table: to the second, in UTC (the record keeps the whole)."""
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        whole = column in WHOLE_COLUMNS
        table.add_column(column, no_wrap=whole, min_width=36 if whole else None)
    for row in rows:
        table.add_row(
            *(
                _short_time(row[c]) if c.endswith("_at") and row.get(c) else cell(c, row.get(c))
                for c in columns
            )
        )
    console().print(table)


def print_record(record: dict[str, Any], fields: Sequence[str] | None = None) -> None:
    """One record, a field a line; an error's traceback after it, as text."""
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    error = record.get("error")
    for key in fields or sorted(record):
        value = record.get(key)
        if key == "error" and isinstance(value, dict):
            table.add_row(key, f"{value.get('type', '')}: {value.get('message', '')}")
        else:
            table.add_row(key, cell(key, value))
    console().print(table)
    if isinstance(error, dict) and error.get("traceback"):
        click.echo("\n" + str(error["traceback"]).rstrip("\n"))


def emit(ctx: click.Context, value: Any, show: Callable[[], None]) -> None:
    """JSON when --json was given, else the human form."""
    if ctx.obj["json"]:
        print_json(value)
    else:
        show()


@contextmanager
def busy(ctx: click.Context, message: str) -> Iterator[None]:
    """A spinner on stderr while the block runs, once it has run for a second: only in a
    terminal and not with --json, so scripts and pipes see nothing of it."""
    if ctx.obj["json"] or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    status = Console(stderr=True).status(message)
    lock = threading.Lock()
    done = False

    def show() -> None:
        with lock:
            if not done:
                status.start()

    timer = threading.Timer(SPINNER_DELAY, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            done = True
            status.stop()
