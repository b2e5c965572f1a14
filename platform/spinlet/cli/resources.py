"""`spinlet runtimes …` and `spinlet functions …`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from spinlet.cli.ids import complete_functions, with_function
from spinlet.cli.output import busy, emit, print_record, print_table
from spinlet.cli.params import environment_json, names_json, size

if TYPE_CHECKING:
    from spinlet.client import Client


def client(ctx: click.Context) -> Client:
    """The API client, made on first use (only by commands that talk to a node)."""
    obj = ctx.find_root().obj
    if obj.get("client") is None:
        from spinlet.client import Client

        obj["client"] = Client(obj["url"], token=obj["token"])
        ctx.find_root().call_on_close(obj["client"].close)
    api: Client = obj["client"]
    return api


function_argument = click.argument("function", shell_complete=complete_functions)


@click.group()
def runtimes() -> None:
    """Runtimes: the images functions run in."""


@runtimes.command("list")
@click.pass_context
def runtimes_list(ctx: click.Context) -> None:
    """List runtimes."""
    rows = client(ctx).runtimes.list()
    emit(ctx, rows, lambda: print_table(rows, ["id", "name", "image", "status"], "runtimes"))


@click.group()
def functions() -> None:
    """Functions: upload code and manage it.

    \b
    Examples:
      spinlet functions create echo functions/echo.py --memory 256Mi --timeout 10
      spinlet functions update echo --env-add MODE=test --env-rm DEBUG
      spinlet functions list
    """


def function_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options `create` and `update` share: what a function is set up with (on update,
    an option not given leaves the setting as it is)."""
    options = [
        click.option("--entry", help="module.function to call (default: <file>.main)."),
        click.option("--timeout", type=float, help="Seconds an execution may take (default 60)."),
        click.option(
            "--memory",
            "memory_size",
            metavar="SIZE",
            callback=size,
            help="Memory limit: bytes, or 128Mi, 1Gi (default 128Mi).",
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
            metavar="KEY=VALUE",
            callback=environment_json,
            help="The function's environment (repeatable): replaces all its variables.",
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
    """Create function NAME from PACKAGE (a .py file, a .zip or a directory).

    \b
    Examples:
      spinlet functions create hello functions/hello.py
      spinlet functions create shop ./shop --entry app.handler --memory 512Mi --env MODE=prod
    """
    runtime = fields.pop("runtime")
    with busy(ctx, f"uploading {package}"):
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
@function_argument
@click.pass_context
def functions_get(ctx: click.Context, function: str) -> None:
    """Show a function (by name, id or the start of its id)."""
    api = client(ctx)
    record = with_function(api, function, api.functions.get)
    emit(ctx, record, lambda: print_record(record))


@functions.command("update")
@function_argument
@click.argument("package", type=click.Path(exists=True), required=False)
@function_settings
@click.option(
    "--env-add",
    "environment_add",
    multiple=True,
    metavar="KEY=VALUE",
    callback=environment_json,
    help="Set this variable, keeping the others (repeatable).",
)
@click.option(
    "--env-rm",
    "environment_remove",
    multiple=True,
    metavar="KEY",
    callback=names_json,
    help="Unset this variable, keeping the others (repeatable).",
)
@click.pass_context
def functions_update(
    ctx: click.Context, /, function: str, package: str | None, **fields: Any
) -> None:
    """Change FUNCTION: new code from PACKAGE and/or settings (the rest stays as it is).

    --env replaces all of the function's variables; --env-add and --env-rm change only the
    ones they name (the API never shows the values, so this is done by the node).

    \b
    Examples:
      spinlet functions update hello functions/hello.py
      spinlet functions update hello --memory 1Gi --timeout 30
      spinlet functions update hello --env-add API_TOKEN=s3cret --env-rm DEBUG
    """
    api = client(ctx)
    with busy(ctx, f"updating {function}"):
        record = with_function(
            api, function, lambda ref: api.functions.update(ref, package, **fields)
        )
    emit(ctx, record, lambda: print_record(record))


@functions.command("delete")
@function_argument
@click.pass_context
def functions_delete(ctx: click.Context, function: str) -> None:
    """Delete a function (its executions stay readable)."""
    api = client(ctx)
    with_function(api, function, api.functions.delete)
    emit(ctx, {"deleted": function}, lambda: click.echo(f"deleted {function}"))
