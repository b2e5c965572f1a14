"""Printing: rich tables in a terminal, JSON with --json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


def print_record(record: dict[str, Any], fields: Sequence[str] | None = None) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key in fields or sorted(record):
        value = record.get(key)
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(key, "" if value is None else text)
    console.print(table)


def emit(ctx: click.Context, value: Any, show: Any) -> None:
    """JSON when --json was given, else the human form."""
    if ctx.obj["json"]:
        print_json(value)
    else:
        show()
