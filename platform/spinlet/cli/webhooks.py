"""`spinlet webhooks …`: URLs that run a function without a token."""

from __future__ import annotations

import click

from spinlet.cli.ids import with_function
from spinlet.cli.output import emit, print_record, print_table
from spinlet.cli.resources import client, function_argument

COLUMNS = ["id", "function_id", "function_alias", "function_version", "mode", "webhook_url"]


@click.group()
def webhooks() -> None:
    """Webhooks: URLs that run a function, without a token (the URL is the secret).

    \b
    Examples:
      spinlet webhooks create hello
      spinlet webhooks create hello --mode http     # the function answers the HTTP call
      curl -X POST -d '{"name": "Ada"}' WEBHOOK_URL
      spinlet webhooks list
      spinlet webhooks delete ID
    """


@webhooks.command("create")
@function_argument
@click.option("--version", type=int, default=0, show_default=True, help="0 is the current code.")
@click.option("--alias", help="Run through this alias of FUNCTION (it picks the version).")
@click.option(
    "--mode",
    type=click.Choice(["async", "http"]),
    default="async",
    show_default=True,
    help="async: queue an execution, answer its id (202); http: run it at once with an HTTP "
    "event, its answer is the response.",
)
@click.option("--description")
@click.pass_context
def webhooks_create(
    ctx: click.Context,
    function: str,
    version: int,
    alias: str | None,
    mode: str,
    description: str | None,
) -> None:
    """Create a webhook that runs FUNCTION; its URL is shown once here and in `list`."""
    api = client(ctx)
    record = with_function(
        api,
        function,
        lambda f: api.webhooks.create(f, version, alias=alias, mode=mode, description=description),
    )
    emit(ctx, record, lambda: print_record(record, [*COLUMNS, "description"]))


@webhooks.command("list")
@click.option("--function", help="Only this function's.")
@click.pass_context
def webhooks_list(ctx: click.Context, function: str | None) -> None:
    """List the project's webhooks, with their URLs."""
    records = client(ctx).webhooks.list(function)
    emit(ctx, records, lambda: print_table(records, COLUMNS, "Webhooks"))


@webhooks.command("delete")
@click.argument("webhook_id")
@click.pass_context
def webhooks_delete(ctx: click.Context, webhook_id: str) -> None:
    """Delete webhook WEBHOOK_ID: its URL answers 404 at once."""
    client(ctx).webhooks.delete(webhook_id)
    emit(ctx, {"deleted": webhook_id}, lambda: click.echo(f"deleted webhook {webhook_id}"))
