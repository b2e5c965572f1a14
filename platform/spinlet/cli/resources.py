"""`spinlet runtimes …` and `spinlet functions …`."""

from __future__ import annotations

import time
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


@runtimes.command("create")
@click.argument("name")
@click.option("--image", required=True, help="The image (name:tag or id), present on the node.")
@click.option("--description")
@click.pass_context
def runtimes_create(ctx: click.Context, name: str, image: str, description: str | None) -> None:
    """Register IMAGE as runtime NAME (admins): your own runtime image.

    The node checks it first (a server answers /health in its protocol version, loads and runs
    a tiny function) and refuses an image that fails, saying what failed; `spinlet runtimes
    check IMAGE` runs every check on this machine's Docker and shows them.

    \b
    Examples:
      spinlet runtimes create python-geo --image acme/python-geo:1
      spinlet runtimes create python-geo --image acme/python-geo:1 --description "GDAL 3.6"
    """
    with busy(ctx, f"checking {image}"):
        record = client(ctx).runtimes.create(name, image, description)
    emit(ctx, record, lambda: print_record(record))


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
        click.option(
            "--requirements",
            type=click.File("r", encoding="utf-8"),
            metavar="FILE",
            help="Its dependencies, a requirements.txt (- for stdin); over the package's own.",
        ),
        click.option(
            "--no-wait",
            is_flag=True,
            help="Return while its dependencies are still being built.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


#: How often the CLI asks whether a function's dependencies are built.
BUILD_POLL = 1.0


def _requirements(fields: dict[str, Any]) -> bool:
    """Turn the `--requirements` file into its text, in place; returns whether to wait."""
    given = fields.pop("requirements", None)
    if given is not None:
        fields["requirements"] = given.read()
    return not fields.pop("no_wait", False)


def built(ctx: click.Context, api: Client, record: dict[str, Any], wait: bool) -> dict[str, Any]:
    """The function once its dependencies are built (or failed to), with progress on stderr;
    at once without `wait` or when it has nothing to build."""
    if not wait or record.get("status") != "building":
        return record
    started = time.monotonic()
    quiet = ctx.obj["json"]
    if not quiet:
        click.echo(f"building the dependencies of {record['name']}…", err=True)
    with busy(ctx, f"resolving the requirements of {record['name']}"):
        while record.get("status") == "building":
            time.sleep(BUILD_POLL)
            record = api.functions.get(record["id"])
    if not quiet and record.get("status") == "available":
        took = time.monotonic() - started
        pins = len(record.get("dependencies") or [])
        click.echo(f"built {pins} dependencies in {took:.1f} s", err=True)
    return record


def show_function(ctx: click.Context, record: dict[str, Any]) -> None:
    """The record; a function whose dependencies failed to build is an error (exit 1)."""
    emit(ctx, record, lambda: print_record(record))
    if record.get("status") == "error":
        raise click.ClickException(
            f"the dependencies of {record['name']} failed to build: "
            f"{record.get('status_message') or 'no details'}"
        )


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
      spinlet functions create report report.py --requirements requirements.txt
    """
    runtime = fields.pop("runtime")
    wait = _requirements(fields)
    api = client(ctx)
    with busy(ctx, f"uploading {package}"):
        record = api.functions.create(name, package, runtime_id=runtime, **fields)
    show_function(ctx, built(ctx, api, record, wait))


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
    wait = _requirements(fields)
    api = client(ctx)
    with busy(ctx, f"updating {function}"):
        record = with_function(
            api, function, lambda ref: api.functions.update(ref, package, **fields)
        )
    show_function(ctx, built(ctx, api, record, wait))


@functions.command("rebuild")
@function_argument
@click.option("--no-wait", is_flag=True, help="Return while they are being built.")
@click.pass_context
def functions_rebuild(ctx: click.Context, function: str, no_wait: bool) -> None:
    """Resolve FUNCTION's requirements again (after an index could not be reached, say).

    Functions with the same requirements and runtime share one build: they are rebuilt too.
    """
    api = client(ctx)
    record = with_function(api, function, api.functions.rebuild)
    show_function(ctx, built(ctx, api, record, not no_wait))


@functions.command("delete")
@function_argument
@click.pass_context
def functions_delete(ctx: click.Context, function: str) -> None:
    """Delete a function (its executions stay readable)."""
    api = client(ctx)
    with_function(api, function, api.functions.delete)
    emit(ctx, {"deleted": function}, lambda: click.echo(f"deleted {function}"))
