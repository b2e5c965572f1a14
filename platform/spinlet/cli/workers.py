"""`spinlet functions workers|scale-up|scale-down|detach`: a function's warm containers, and
those kept for it whatever the keep-alive (provisioned concurrency)."""

from __future__ import annotations

from typing import Any

import click

from spinlet.cli.ids import with_function
from spinlet.cli.output import emit, print_table
from spinlet.cli.resources import client, function_argument

WORKER_COLUMNS = ["worker_name", "function_version", "node_id", "state", "provisioned", "since"]

count_option = click.option(
    "--count", type=click.IntRange(1, 1000), default=1, show_default=True, help="How many."
)


@click.command("workers")
@function_argument
@click.pass_context
def functions_workers(ctx: click.Context, function: str) -> None:
    """List FUNCTION's warm containers on every live node (`provisioned`: kept by scale-up)."""
    api = client(ctx)
    rows = with_function(api, function, api.functions.workers)
    emit(ctx, rows, lambda: print_table(rows, WORKER_COLUMNS, "workers"))


def _scaled(ctx: click.Context, answer: dict[str, Any]) -> None:
    emit(ctx, answer, lambda: click.echo(answer["message"]))


@click.command("scale-up")
@function_argument
@count_option
@click.pass_context
def functions_scale_up(ctx: click.Context, function: str, count: int) -> None:
    """Keep COUNT more containers initialised for FUNCTION's current code, whatever the
    keep-alive: its next calls start warm. The nodes with room start them now."""
    api = client(ctx)
    _scaled(ctx, with_function(api, function, lambda ref: api.functions.scale_up(ref, count)))


@click.command("scale-down")
@function_argument
@count_option
@click.pass_context
def functions_scale_down(ctx: click.Context, function: str, count: int) -> None:
    """Keep COUNT fewer provisioned containers of FUNCTION (busy ones go once they end)."""
    api = client(ctx)
    _scaled(ctx, with_function(api, function, lambda ref: api.functions.scale_down(ref, count)))


@click.command("detach")
@function_argument
@click.pass_context
def functions_detach(ctx: click.Context, function: str) -> None:
    """Release every provisioned container of FUNCTION."""
    api = client(ctx)
    _scaled(ctx, with_function(api, function, api.functions.detach))


COMMANDS = (functions_workers, functions_scale_up, functions_scale_down, functions_detach)
