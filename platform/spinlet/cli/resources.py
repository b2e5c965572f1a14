"""Commands for runtimes, functions, executions and invoke."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from spinlet.cli.output import emit, print_record, print_table
from spinlet.client import Client


def client(ctx: click.Context) -> Client:
    api: Client = ctx.obj["client"]
    return api


def parse_input(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string is a fine input too


@click.group()
def runtimes() -> None:
    """Runtimes: the images functions run in."""


@runtimes.command("list")
@click.pass_context
def runtimes_list(ctx: click.Context) -> None:
    """List runtimes."""
    rows = client(ctx).runtimes.list()
    emit(ctx, rows, lambda: print_table(rows, ["id", "name", "image", "status"], "runtimes"))


def environment_option(pairs: tuple[str, ...]) -> str | None:
    """`--env KEY=VALUE …` as the JSON object the API takes (None when not given)."""
    if not pairs:
        return None
    environment: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        environment[key] = value
    return json.dumps(environment)


@click.group()
def functions() -> None:
    """Functions: upload code and manage it."""


def function_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options `create` and `update` share: what a function is set up with (on update,
    an option not given leaves the setting as it is)."""
    options = [
        click.option("--entry", help="module.function to call (default: <file>.main)."),
        click.option("--timeout", type=float, help="Seconds an execution may take (default 60)."),
        click.option(
            "--memory", "memory_size", type=int, help="Memory limit in bytes (default 128 MiB)."
        ),
        click.option("--cpu", type=int, help="CPU in millicores (default 1000)."),
        click.option(
            "--concurrency", type=int, help="Executions at once on a node (default 10); more wait."
        ),
        click.option("--retries", type=int, help="Re-runs of an async execution whose node died."),
        click.option(
            "--env",
            "environment",
            multiple=True,
            callback=lambda ctx, param, value: environment_option(value),
            help="KEY=VALUE for the function's environment (repeatable; replaces all variables).",
        ),
        click.option(
            "--network/--no-network",
            default=None,
            help="An isolated network (the outside world only) for its containers (default: none).",
        ),
        click.option("--description"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@functions.command("create")
@click.argument("name")
@click.argument("package", type=click.Path(exists=True))
@click.option("--runtime", default=None, help="Runtime id or name (default python3).")
@function_settings
@click.pass_context
def functions_create(ctx: click.Context, /, name: str, package: str, **fields: Any) -> None:
    """Create function NAME from PACKAGE (a .py file, a .zip or a directory)."""
    runtime = fields.pop("runtime")
    record = client(ctx).functions.create(name, package, runtime_id=runtime, **fields)
    emit(ctx, record, lambda: print_record(record))


@functions.command("list")
@click.pass_context
def functions_list(ctx: click.Context) -> None:
    """List functions."""
    rows = client(ctx).functions.list()
    columns = ["id", "name", "entry", "timeout", "memory_size", "cpu", "concurrency", "status"]
    emit(ctx, rows, lambda: print_table(rows, columns, "functions"))


@functions.command("get")
@click.argument("function")
@click.pass_context
def functions_get(ctx: click.Context, function: str) -> None:
    """Show a function (by id or name)."""
    record = client(ctx).functions.get(function)
    emit(ctx, record, lambda: print_record(record))


@functions.command("update")
@click.argument("function")
@click.argument("package", type=click.Path(exists=True), required=False)
@function_settings
@click.pass_context
def functions_update(
    ctx: click.Context, /, function: str, package: str | None, **fields: Any
) -> None:
    """Change FUNCTION: new code from PACKAGE and/or settings (the rest stays as it is)."""
    record = client(ctx).functions.update(function, package, **fields)
    emit(ctx, record, lambda: print_record(record))


@functions.command("delete")
@click.argument("function")
@click.pass_context
def functions_delete(ctx: click.Context, function: str) -> None:
    """Delete a function (its executions stay readable)."""
    client(ctx).functions.delete(function)
    emit(ctx, {"deleted": function}, lambda: click.echo(f"deleted {function}"))
