"""`spinlet invoke` and `spinlet executions …`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from spinlet.cli.output import emit, print_record, print_table
from spinlet.cli.resources import client, parse_input

EXECUTION_COLUMNS = [
    "id",
    "function_name",
    "function_version",
    "function_alias",
    "status",
    "status_reason",
    "start_kind",
    "duration_ms",
    "created_at",
]


def _report(ctx: click.Context, record: dict[str, Any]) -> None:
    """Print a finished execution's result (or its error on stderr, exit status 1)."""
    if ctx.obj["json"]:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    elif record["status"] == "success":
        click.echo(json.dumps(record["result"]))
    else:
        error = record.get("error") or {}
        click.echo(
            f"execution {record['id']} {record['status']} ({record['status_reason']}): "
            f"{error.get('type', '')}: {error.get('message', '')}",
            err=True,
        )
    if record["status"] != "success":
        sys.exit(1)


@click.command()
@click.argument("function")
@click.option("--input", "input_text", help="The input: JSON (or a plain string).")
@click.option("--version", type=int, default=0, show_default=True, help="0 is the current code.")
@click.option("--alias", help="Run through this alias (it picks the function and version).")
@click.option("--async", "is_async", is_flag=True, help="Queue it and print the execution id.")
@click.option("--id", "execution_id", help="A UUID of your choice: retrying is then safe.")
@click.pass_context
def invoke(
    ctx: click.Context,
    function: str,
    input_text: str | None,
    version: int,
    alias: str | None,
    is_async: bool,
    execution_id: str | None,
) -> None:
    """Run FUNCTION and print its result (exit status 1 if it failed).

    With --async, print the execution's id at once; `spinlet executions get ID --wait`
    collects the result.
    """
    record = client(ctx).executions.create(
        function,  # with --alias, the server checks that the alias belongs to it
        parse_input(input_text),
        version=version,
        alias=alias,
        sync=not is_async,
        id=execution_id,
    )
    if is_async:
        emit(ctx, record, lambda: click.echo(record["id"]))
    else:
        _report(ctx, record)


@click.group()
def executions() -> None:
    """Executions: the record of every invocation."""


@executions.command("get")
@click.argument("execution_id")
@click.option("--wait", is_flag=True, help="Wait until it has finished.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds.")
@click.pass_context
def executions_get(
    ctx: click.Context, execution_id: str, wait: bool, timeout: float | None
) -> None:
    """Show an execution."""
    record = client(ctx).executions.get(execution_id, wait=wait, timeout=timeout)
    emit(ctx, record, lambda: print_record(record))


@executions.command("list")
@click.option("--function", "function_id", help="Only this function's executions.")
@click.option("--status", help="Only these statuses (comma-separated).")
@click.option(
    "--include-completed/--running-only",
    default=True,
    help="--running-only lists only queued and running executions.",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="FIELD=OP:VALUE",
    help="Any API filter, e.g. created_at=gt:2026-01-01 or description=has:nightly.",
)
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def executions_list(
    ctx: click.Context,
    function_id: str | None,
    status: str | None,
    include_completed: bool,
    filters: tuple[str, ...],
    limit: int,
) -> None:
    """List executions, newest first."""
    api = client(ctx)
    params: dict[str, Any] = {"limit": limit, "include_completed": include_completed}
    if function_id:
        params["function_id"] = api.functions.get(function_id)["id"]
    if status:
        params["status"] = f"in:{status}"
    for item in filters:
        field, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not FIELD=OP:VALUE", param_hint="--filter")
        params[field] = value
    rows = api.executions.list(**params)
    emit(ctx, rows, lambda: print_table(rows, EXECUTION_COLUMNS, "executions"))


@executions.command("log")
@click.argument("execution_id")
@click.pass_context
def executions_log(ctx: click.Context, execution_id: str) -> None:
    """Print what an execution wrote to stdout and stderr."""
    text = client(ctx).executions.log(execution_id)
    emit(ctx, {"log": text}, lambda: click.echo(text, nl=False))


@executions.command("cancel")
@click.argument("execution_id")
@click.option("--kill", is_flag=True, help="Stop it at once (else it gets a short grace period).")
@click.pass_context
def executions_cancel(ctx: click.Context, execution_id: str, kill: bool) -> None:
    """Cancel a queued or running execution."""
    record = client(ctx).executions.cancel(execution_id, kill=kill)
    emit(ctx, record, lambda: click.echo(f"{record['id']} {record['status']}"))


@executions.command("delete")
@click.argument("execution_id", required=False)
@click.option("--keep-last", type=int, help="Delete all finished executions but the newest N.")
@click.option("--to", "to_datetime", help="Delete finished executions created before this time.")
@click.pass_context
def executions_delete(
    ctx: click.Context, execution_id: str | None, keep_last: int | None, to_datetime: str | None
) -> None:
    """Delete one execution, or purge finished ones with --keep-last / --to."""
    api = client(ctx)
    if execution_id:
        api.executions.delete(execution_id)
        emit(ctx, {"deleted": 1}, lambda: click.echo(f"deleted {execution_id}"))
        return
    if keep_last is None and to_datetime is None:
        raise click.UsageError("give an EXECUTION_ID, --keep-last N or --to DATETIME")
    count = api.executions.purge(keep_last=keep_last, to_datetime=to_datetime)
    emit(ctx, {"deleted": count}, lambda: click.echo(f"deleted {count} execution(s)"))
