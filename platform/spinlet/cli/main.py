"""The `spinlet` command."""

from __future__ import annotations

import sys
from typing import Any

import click
import httpx

from spinlet import __version__
from spinlet.cli.bench import bench
from spinlet.cli.executions import executions, invoke
from spinlet.cli.output import errors
from spinlet.cli.releases import aliases, versions
from spinlet.cli.resources import functions, runtimes
from spinlet.cli.serve import runtimes_build, serve
from spinlet.cli.tokens import tokens
from spinlet.client import ApiError, Client
from spinlet.errors import SpinletError


class Spinlet(click.Group):
    """Turns errors into one clean line on stderr (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ApiError, SpinletError, httpx.HTTPError, OSError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            message = str(exc)
            if isinstance(exc, httpx.ConnectError):
                message = f"cannot reach the Spinlet server at {ctx.obj['client'].url}: {exc}"
            errors.print(f"[red]error:[/red] {message}", highlight=False)
            sys.exit(1)


@click.group(cls=Spinlet)
@click.version_option(__version__, prog_name="spinlet")
@click.option("--url", envvar="SPINLET_URL", help="Server URL (default http://127.0.0.1:7070).")
@click.option("--token", envvar="SPINLET_TOKEN", help="API token (SPINLET_TOKEN).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, as_json: bool, debug: bool) -> None:
    """Spinlet: a self-hosted serverless function platform."""
    ctx.obj = {"client": Client(url, token=token), "json": as_json, "debug": debug}
    ctx.call_on_close(ctx.obj["client"].close)


runtimes.add_command(runtimes_build)
for command in (serve, tokens, runtimes, functions, versions, aliases, invoke, executions, bench):
    cli.add_command(command)


def main() -> None:
    cli()
