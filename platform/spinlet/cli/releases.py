"""`spinlet versions …` and `spinlet aliases …`: releasing, rolling back, canaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from spinlet.cli.ids import complete_functions, with_function
from spinlet.cli.output import emit, print_record, print_table
from spinlet.cli.resources import client, function_argument

VERSION_COLUMNS = ["version_number", "description", "entry", "image_id", "created_at"]
ALIAS_COLUMNS = ["name", "function_id", "function_version", "canary", "description"]


def _canary(alias: dict[str, Any]) -> dict[str, Any]:
    """The alias with its routing as one readable column: `2 (10%)`."""
    routing = alias.get("routing")
    shown = f"{routing['version']} ({routing['weight']:.0%})" if routing else None
    return {**alias, "canary": shown}


@click.group()
def versions() -> None:
    """Versions: immutable snapshots of a function's code and config (0: the current code).

    \b
    Examples:
      spinlet versions publish hello --description "first release"
      spinlet versions list hello
      spinlet versions get hello 1 --download hello-v1.zip
    """


@versions.command("publish")
@function_argument
@click.option("--description", help="What this release is.")
@click.pass_context
def versions_publish(ctx: click.Context, function: str, description: str | None) -> None:
    """Publish FUNCTION's current code and config as its next version.

    When nothing changed since the latest version, that version is shown instead.
    """
    api = client(ctx)
    record = with_function(api, function, lambda f: api.versions.publish(f, description))
    emit(ctx, record, lambda: click.echo(f"{function} version {record['version_number']}"))


@versions.command("list")
@function_argument
@click.pass_context
def versions_list(ctx: click.Context, function: str) -> None:
    """List FUNCTION's versions."""
    api = client(ctx)
    rows = with_function(api, function, api.versions.list)
    emit(ctx, rows, lambda: print_table(rows, VERSION_COLUMNS, f"versions of {function}"))


@versions.command("get")
@function_argument
@click.argument("number", type=int)
@click.option(
    "--download",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the version's package (a zip) to this file instead.",
)
@click.pass_context
def versions_get(ctx: click.Context, function: str, number: int, download: str | None) -> None:
    """Show version NUMBER of FUNCTION (0: the current code)."""
    if download is not None:
        api = client(ctx)
        data = with_function(api, function, lambda f: api.versions.download(f, number))
        Path(download).write_bytes(data)
        result = {"downloaded": download, "size": len(data)}
        emit(ctx, result, lambda: click.echo(f"wrote {len(data)} bytes to {download}"))
        return
    api = client(ctx)
    record = with_function(api, function, lambda f: api.versions.get(f, number))
    emit(ctx, record, lambda: print_record(record))


@versions.command("delete")
@function_argument
@click.argument("number", type=int)
@click.pass_context
def versions_delete(ctx: click.Context, function: str, number: int) -> None:
    """Delete version NUMBER of FUNCTION (refused while an alias uses it)."""
    api = client(ctx)
    with_function(api, function, lambda f: api.versions.delete(f, number))
    result = {"deleted": number, "function": function}
    emit(ctx, result, lambda: click.echo(f"deleted version {number} of {function}"))


@click.group()
def aliases() -> None:
    """Aliases: stable names for a function at a version, with an optional canary.

    \b
    Examples:
      spinlet aliases create live hello --version 1
      spinlet aliases update live --canary-version 2 --canary-weight 0.1
      spinlet aliases update live --version 2     # promote the canary
      spinlet invoke hello --alias live
    """


def _routing(version: int | None, weight: float | None) -> dict[str, Any] | None:
    if version is None and weight is None:
        return None
    if version is None or weight is None:
        raise click.UsageError("--canary-version and --canary-weight go together")
    return {"version": version, "weight": weight}


@aliases.command("create")
@click.argument("name")
@function_argument
@click.option("--version", type=int, default=0, show_default=True, help="0 is the current code.")
@click.option("--description")
@click.option("--canary-version", type=int, help="A second version, for a share of executions.")
@click.option("--canary-weight", type=float, help="That share, between 0 and 1 (0.1 = 10%).")
@click.pass_context
def aliases_create(
    ctx: click.Context,
    name: str,
    function: str,
    version: int,
    description: str | None,
    canary_version: int | None,
    canary_weight: float | None,
) -> None:
    """Create alias NAME for FUNCTION at a version."""
    api = client(ctx)
    routing = _routing(canary_version, canary_weight)
    record = with_function(
        api,
        function,
        lambda f: api.aliases.create(name, f, version, description=description, routing=routing),
    )
    emit(ctx, record, lambda: print_record(_canary(record), ALIAS_COLUMNS))


@aliases.command("update")
@click.argument("name")
@click.option(
    "--function",
    shell_complete=complete_functions,
    help="Point at another function (name, id or the start of its id).",
)
@click.option("--version", type=int, help="Point at this version (0: the current code).")
@click.option("--description")
@click.option("--canary-version", type=int, help="Send a share of executions to this version.")
@click.option("--canary-weight", type=float, help="The canary's share, between 0 and 1.")
@click.option("--no-canary", is_flag=True, help="Stop the canary.")
@click.pass_context
def aliases_update(
    ctx: click.Context,
    name: str,
    function: str | None,
    version: int | None,
    description: str | None,
    canary_version: int | None,
    canary_weight: float | None,
    no_canary: bool,
) -> None:
    """Re-point alias NAME (what is not given stays as it is).

    Pointing it at its canary's version promotes the canary (the canary ends).
    """
    api = client(ctx)
    routing: dict[str, Any] | None = None
    if no_canary:
        if canary_version is not None or canary_weight is not None:
            raise click.UsageError("--no-canary goes alone, without --canary-*")
        routing = {}
    elif canary_version is not None or canary_weight is not None:
        current = api.aliases.get(name).get("routing") or {}
        routing = _routing(
            current.get("version") if canary_version is None else canary_version,
            current.get("weight") if canary_weight is None else canary_weight,
        )

    def update(function: str | None) -> dict[str, Any]:
        return api.aliases.update(
            name, function=function, version=version, description=description, routing=routing
        )

    record = update(None) if function is None else with_function(api, function, update)
    emit(ctx, record, lambda: print_record(_canary(record), ALIAS_COLUMNS))


@aliases.command("list")
@click.option(
    "--function",
    shell_complete=complete_functions,
    help="Only this function's aliases (name, id or the start of its id).",
)
@click.pass_context
def aliases_list(ctx: click.Context, function: str | None) -> None:
    """List aliases."""
    api = client(ctx)
    rows = (
        api.aliases.list(None)
        if function is None
        else with_function(api, function, api.aliases.list)
    )
    emit(ctx, rows, lambda: print_table([_canary(r) for r in rows], ALIAS_COLUMNS, "aliases"))


@aliases.command("get")
@click.argument("name")
@click.pass_context
def aliases_get(ctx: click.Context, name: str) -> None:
    """Show an alias."""
    record = client(ctx).aliases.get(name)
    emit(ctx, record, lambda: print_record(_canary(record)))


@aliases.command("delete")
@click.argument("name")
@click.pass_context
def aliases_delete(ctx: click.Context, name: str) -> None:
    """Delete an alias."""
    client(ctx).aliases.delete(name)
    emit(ctx, {"deleted": name}, lambda: click.echo(f"deleted alias {name}"))
