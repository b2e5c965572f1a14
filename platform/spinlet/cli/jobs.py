"""`spinlet jobs …`: cron jobs."""

from __future__ import annotations

from typing import Any

import click

from spinlet.cli.ids import complete_functions, with_function
from spinlet.cli.output import emit, print_record, print_table
from spinlet.cli.params import INPUT_HELP, RAW_HELP, read_input
from spinlet.cli.resources import client

JOB_COLUMNS = [
    "id",
    "name",
    "pattern",
    "timezone",
    "status",
    "next_execution_time",
    "count",
    "skipped",
    "last_execution_status",
]


@click.group()
def jobs() -> None:
    """Cron jobs: run a function at each tick of a cron pattern.

    A pattern has 5 fields (minute hour day month weekday), or 6 with seconds last. A tick
    that comes while the job's previous execution still runs is skipped (and counted).

    \b
    Examples:
      spinlet jobs create hello --pattern "*/5 * * * *" --input '{"name": "cron"}'
      spinlet jobs create report --pattern "0 7 * * 1-5" --timezone Europe/Paris --name daily
      spinlet jobs create hello --first-time 2030-01-01T09:00:00Z   (once, then done)
      spinlet jobs pause JOB_ID
      spinlet executions list --job JOB_ID
    """


@jobs.command("create")
@click.argument("function", shell_complete=complete_functions)
@click.option("--pattern", help="Cron pattern: 5 fields, or 6 with seconds last.")
@click.option("--name")
@click.option("--input", "input_text", metavar="JSON|@FILE|-", help=INPUT_HELP)
@click.option("--raw", is_flag=True, help=RAW_HELP)
@click.option("--version", type=int, default=0, show_default=True, help="0 is the current code.")
@click.option("--alias", help="Run through this alias (it picks the function and version).")
@click.option(
    "--first-time",
    "first_execution_time",
    metavar="TIME",
    help="The first run (RFC 3339; UTC without an offset); alone: run once then.",
)
@click.option("--count", type=int, help="Run this many times, then be done (default: no end).")
@click.option("--timezone", help="The pattern's time zone (IANA name; default UTC).")
@click.pass_context
def jobs_create(
    ctx: click.Context,
    /,
    function: str,
    input_text: str | None,
    raw: bool,
    **fields: Any,
) -> None:
    """Create a job running FUNCTION at each tick of --pattern (or once, at --first-time)."""
    event = read_input(input_text, raw)
    pattern = fields.pop("pattern")
    api = client(ctx)
    record = with_function(
        api, function, lambda ref: api.jobs.create(ref, pattern, event, **fields)
    )
    emit(ctx, record, lambda: print_record(record))


@jobs.command("list")
@click.pass_context
def jobs_list(ctx: click.Context) -> None:
    """List jobs."""
    rows = client(ctx).jobs.list()
    emit(ctx, rows, lambda: print_table(rows, JOB_COLUMNS, "jobs"))


@jobs.command("get")
@click.argument("job")
@click.pass_context
def jobs_get(ctx: click.Context, job: str) -> None:
    """Show a job, with its next tick and its last execution."""
    record = client(ctx).jobs.get(job)
    emit(ctx, record, lambda: print_record(record))


def _status_command(name: str, status: str, summary: str) -> None:
    @jobs.command(name, help=summary)
    @click.argument("job")
    @click.pass_context
    def command(ctx: click.Context, job: str) -> None:
        record = client(ctx).jobs.update(job, status=status)
        emit(ctx, record, lambda: print_record(record))


_status_command("pause", "paused", "Pause a job: it fires nothing until resumed.")
_status_command(
    "resume", "running", "Resume a paused job (a tick that passed meanwhile is not fired)."
)
_status_command("cancel", "cancelled", "Cancel a job for good (it stays listed).")


@jobs.command("delete")
@click.argument("job")
@click.pass_context
def jobs_delete(ctx: click.Context, job: str) -> None:
    """Delete a job (the executions it fired stay)."""
    client(ctx).jobs.delete(job)
    emit(ctx, {"deleted": job}, lambda: click.echo(f"deleted {job}"))
