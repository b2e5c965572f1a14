"""`spinlet invoke` and `spinlet executions …`."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from spinlet.cli.follow import cut_short, print_log, settled
from spinlet.cli.ids import complete_functions, execution_id, with_function
from spinlet.cli.output import busy, emit, print_json, print_record, print_table
from spinlet.cli.params import INPUT_HELP, RAW_HELP, read_input
from spinlet.cli.resources import client

if TYPE_CHECKING:
    from spinlet.client import Client

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
#: The exit status of `executions get --wait` when the wait ended first.
STILL_RUNNING = 3


#: How many of a failed execution's last log lines `invoke` shows.
LOG_LINES_SHOWN = 20


def _report(
    ctx: click.Context, api: Client, record: dict[str, Any], followed: str | None = None
) -> None:
    """Print a finished execution's result, or on stderr why it failed (exit status 1).
    `followed`: the end of its log, when the log was just printed as it was written."""
    if ctx.obj["json"]:
        print_json(record)
    elif record["status"] == "success":
        click.echo(json.dumps(record["result"]))
    else:
        _explain_failure(api, record, followed)
    if record["status"] != "success":
        sys.exit(1)


def _explain_failure(api: Client, record: dict[str, Any], followed: str | None = None) -> None:
    """The error's type and message, the end of the log and the traceback: what one needs to
    see why it failed, without a second command. The log ends with the traceback already (the
    runtime writes it there): it is shown once, last. When the log was just followed
    (`followed` is its end), it is not shown again, nor the traceback it ended with."""
    error = record.get("error") or {}
    line = f"execution {record['id']} {record['status']} ({record['status_reason']})"
    if error:  # a cancelled execution ended without one
        line += f": {error.get('type', '')}: {error.get('message', '')}"
    click.echo(line, err=True)
    traceback = str(error.get("traceback") or "")
    if followed is not None:
        if traceback and not followed.rstrip("\n").endswith(traceback.rstrip("\n")):
            click.echo(traceback.rstrip("\n"), err=True)
        return
    if record["status"] in ("failed", "error"):
        log = _log_before(api, record["id"], traceback)
        lines = log.splitlines()
        if lines:
            shown = lines[-LOG_LINES_SHOWN:]
            more = f"last {len(shown)} of {len(lines)} lines, " if len(shown) < len(lines) else ""
            click.echo(f"--- log ({more}spinlet executions log {record['id']}) ---", err=True)
            click.echo("\n".join(shown), err=True)
    if traceback:
        click.echo(traceback.rstrip("\n"), err=True)


def _log_before(api: Client, execution_id: str, traceback: str) -> str:
    """The execution's log without the traceback it ends with, or the traceback's last lines
    when a log cut to its cap kept only those ("" when the log cannot be read: the failure is
    still told)."""
    from spinlet.client import ApiError

    try:
        log = api.executions.log(execution_id)
    except (ApiError, OSError):
        return ""
    lines = traceback.splitlines(keepends=True)
    for start in range(len(lines)):
        if log.endswith(ending := "".join(lines[start:])):
            return log.removesuffix(ending)
    return log


@click.command()
@click.argument("function", shell_complete=complete_functions)
@click.option("--input", "input_text", metavar="JSON|@FILE|-", help=INPUT_HELP)
@click.option("--raw", is_flag=True, help=RAW_HELP)
@click.option("--version", type=int, default=0, show_default=True, help="0 is the current code.")
@click.option("--alias", help="Run through this alias (it picks the function and version).")
@click.option("--async", "is_async", is_flag=True, help="Queue it and print the execution id.")
@click.option("--follow", is_flag=True, help="Print its log as it is written, then its result.")
@click.option("--id", "chosen_id", help="A UUID of your choice: retrying is then safe.")
@click.option(
    "--schedule",
    metavar="TIME",
    help="Queue it at TIME (RFC 3339; UTC without an offset) and print its id.",
)
@click.pass_context
def invoke(
    ctx: click.Context,
    function: str,
    input_text: str | None,
    raw: bool,
    version: int,
    alias: str | None,
    is_async: bool,
    follow: bool,
    chosen_id: str | None,
    schedule: str | None,
) -> None:
    """Run FUNCTION and print its result (exit status 1 if it failed).

    When it fails, its error, the last lines of its log and its traceback are printed on
    stderr (with --json, the record on stdout).

    With --async, print the execution's id at once; `spinlet executions get ID --wait`
    collects the result.

    With --follow, run it asynchronously and print its log on stdout as it is written (on
    stderr with --json), then its result as above; the log ends with the traceback of a
    failure, so only the error's line follows it. Ctrl-C stops following, not the execution.

    \b
    Examples:
      spinlet invoke hello --input '{"name": "Ada"}'
      spinlet invoke hello --input @event.json
      generate-event | spinlet invoke hello --input -
      spinlet invoke hello --raw --input 'a plain string'
      spinlet invoke hello --follow
      id=$(spinlet invoke hello --async) && spinlet executions get "$id" --wait
      spinlet invoke hello --schedule 2030-01-01T09:00:00Z
    """
    if is_async and follow:
        raise click.UsageError("--async and --follow: choose one")
    if schedule and follow:
        raise click.UsageError("--schedule and --follow: choose one")
    is_async = is_async or schedule is not None
    event = read_input(input_text, raw)
    api = client(ctx)
    sync = not (is_async or follow)
    with busy(ctx, f"running {function}"):
        record = with_function(
            api,
            function,  # with --alias, the server checks that the alias belongs to it
            lambda ref: api.executions.create(
                ref, event, version=version, alias=alias, sync=sync, id=chosen_id, schedule=schedule
            ),
        )
    if is_async:
        emit(ctx, record, lambda: click.echo(record["id"]))
    elif follow:
        _follow_and_report(ctx, api, record["id"])
    else:
        _report(ctx, api, record)


def _follow_and_report(ctx: click.Context, api: Client, execution_id: str) -> None:
    """`invoke --follow` once the execution is queued: its log as it comes, then its result.
    With --json the log goes to stderr, so that stdout holds the record alone."""
    from spinlet.client import FINAL_STATUSES

    try:
        followed = print_log(api, execution_id, err=ctx.obj["json"])
        if followed and not followed.endswith("\n"):  # the result starts a line of its own
            click.echo(err=ctx.obj["json"])
        record = settled(api, execution_id)
        if record["status"] not in FINAL_STATUSES:
            click.echo(f"{cut_short(record)}; waiting for its result", err=True)
            record = api.executions.get(execution_id, wait=True)
    except KeyboardInterrupt:
        click.echo(
            f"\nexecution {execution_id} goes on: "
            f"`spinlet executions get {execution_id} --wait` shows how it ends",
            err=True,
        )
        sys.exit(130)
    _report(ctx, api, record, followed)


@click.group()
def executions() -> None:
    """Executions: the record of every invocation.

    An execution is named by its id or any unique start of it (`38eda13e`).

    \b
    Examples:
      spinlet executions list --function hello --status failed
      spinlet executions get 38eda13e --wait --timeout 30
      spinlet executions log 38eda13e
      spinlet executions log 38eda13e -f --timestamps
    """


executions.add_command(invoke, "create")


@executions.command("get")
@click.argument("execution")
@click.option("--wait", is_flag=True, help="Wait until it has finished.")
@click.option(
    "--timeout",
    type=float,
    help=f"With --wait: give up after this many seconds (exit status {STILL_RUNNING}).",
)
@click.pass_context
def executions_get(ctx: click.Context, execution: str, wait: bool, timeout: float | None) -> None:
    """Show an execution (by id or the start of its id).

    With --wait, once it has finished; when --timeout passes first, the record as it is then,
    with exit status 3.
    """
    from spinlet.client import FINAL_STATUSES

    api = client(ctx)
    ref = execution_id(api, execution)
    with busy(ctx, f"waiting for {ref}"):
        record = api.executions.get(ref, wait=wait, timeout=timeout)
    emit(ctx, record, lambda: print_record(record))
    if record["status"] not in FINAL_STATUSES and wait:
        click.echo(
            f"execution {record['id']} is still {record['status']} after {timeout or 0:g} s",
            err=True,
        )
        sys.exit(STILL_RUNNING)


@executions.command("list")
@click.option(
    "--function", "function_id", shell_complete=complete_functions, help="Only its executions."
)
@click.option("--status", help="Only these statuses (comma-separated).")
@click.option("--job", "job_id", help="Only the executions this cron job fired.")
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
    job_id: str | None,
    include_completed: bool,
    filters: tuple[str, ...],
    limit: int,
) -> None:
    """List executions, newest first."""
    api = client(ctx)
    params: dict[str, Any] = {"limit": limit, "include_completed": include_completed}
    if function_id:
        params["function_id"] = with_function(api, function_id, api.functions.get)["id"]
    if status:
        params["status"] = f"in:{status}"
    if job_id:
        params["job_id"] = job_id
    for item in filters:
        field, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not FIELD=OP:VALUE", param_hint="--filter")
        params[field] = value
    rows = api.executions.list(**params)
    emit(ctx, rows, lambda: print_table(rows, EXECUTION_COLUMNS, "executions"))


@executions.command("log")
@click.argument("execution")
@click.option(
    "-f", "--follow", is_flag=True, help="Print it as it is written, until the execution ends."
)
@click.option(
    "--timestamps",
    is_flag=True,
    help="With --follow: each line starts with when it was written and its stream.",
)
@click.pass_context
def executions_log(ctx: click.Context, execution: str, follow: bool, timestamps: bool) -> None:
    """Print what an execution wrote to stdout and stderr.

    A running execution's log is empty until it ends; with --follow, it is printed from its
    start as it is written, and the command exits (status 0) when the execution ends, however
    it ended. A finished execution's log is printed at once either way.
    """
    if timestamps and not follow:
        raise click.UsageError("--timestamps needs --follow")
    if follow and ctx.obj["json"]:
        raise click.UsageError("--follow prints the log as text: leave out --json")
    api = client(ctx)
    ref = execution_id(api, execution)
    if not follow:
        text = api.executions.log(ref)
        emit(ctx, {"log": text}, lambda: click.echo(text, nl=False))
        return
    from spinlet.client import FINAL_STATUSES

    print_log(api, ref, timestamps=timestamps)
    record = settled(api, ref)
    if record["status"] not in FINAL_STATUSES:
        click.echo(f"{cut_short(record)}: follow it again to see the rest", err=True)
        sys.exit(STILL_RUNNING)


@executions.command("cancel")
@click.argument("execution")
@click.option("--kill", is_flag=True, help="Stop it at once (else it gets a short grace period).")
@click.pass_context
def executions_cancel(ctx: click.Context, execution: str, kill: bool) -> None:
    """Cancel a scheduled, queued or running execution."""
    api = client(ctx)
    record = api.executions.cancel(execution_id(api, execution), kill=kill)
    emit(ctx, record, lambda: click.echo(f"{record['id']} {record['status']}"))


@executions.command("delete")
@click.argument("execution", required=False)
@click.option("--keep-last", type=int, help="Delete all finished executions but the newest N.")
@click.option("--to", "to_datetime", help="Delete finished executions created before this time.")
@click.pass_context
def executions_delete(
    ctx: click.Context, execution: str | None, keep_last: int | None, to_datetime: str | None
) -> None:
    """Delete one execution, or purge finished ones with --keep-last / --to."""
    api = client(ctx)
    if execution:
        ref = execution_id(api, execution)
        api.executions.delete(ref)
        emit(ctx, {"deleted": 1}, lambda: click.echo(f"deleted {ref}"))
        return
    if keep_last is None and to_datetime is None:
        raise click.UsageError("give an EXECUTION id, --keep-last N or --to DATETIME")
    count = api.executions.purge(keep_last=keep_last, to_datetime=to_datetime)
    emit(ctx, {"deleted": count}, lambda: click.echo(f"deleted {count} execution(s)"))
