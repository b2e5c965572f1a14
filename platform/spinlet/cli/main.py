"""The `spinlet` command.

Each command imports what it needs when it runs (the store, SQLAlchemy, the Docker SDK, aiohttp,
rich): `spinlet --help` and the client commands stay quick
(tests/unit/test_cli_imports.py checks which heavy modules they load).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from spinlet import __version__
from spinlet.cli.bench import bench
from spinlet.cli.checks import runtimes_check
from spinlet.cli.executions import executions, invoke
from spinlet.cli.jobs import jobs
from spinlet.cli.output import error
from spinlet.cli.releases import aliases, versions
from spinlet.cli.resources import functions, runtimes
from spinlet.cli.serve import runtimes_build, serve
from spinlet.cli.tokens import tokens
from spinlet.cli.webhooks import webhooks
from spinlet.cli.workers import COMMANDS as WORKER_COMMANDS
from spinlet.errors import SpinletError


def expected_errors() -> tuple[type[BaseException], ...]:
    """What a command may fail with that is the user's to fix or the node's to report: one
    line each, no traceback. The API client's errors count only once it has been loaded."""
    kinds: list[type[BaseException]] = [SpinletError, OSError]
    if "spinlet.client" in sys.modules:
        from http.client import HTTPException

        from spinlet.client import ApiError

        kinds += [ApiError, HTTPException]
    return tuple(kinds)


def describe(exc: BaseException, obj: dict[str, Any]) -> str:
    if isinstance(exc, ConnectionError | TimeoutError) and obj.get("client"):
        return f"cannot reach the Spinlet server at {obj['client'].url}: {exc}"
    return str(exc)


class Spinlet(click.Group):
    """Turns errors into one clean line on stderr (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            obj = ctx.obj or {}
            if obj.get("debug") or not isinstance(exc, expected_errors()):
                raise
            error(describe(exc, obj))
            sys.exit(1)


@click.group(cls=Spinlet)
@click.version_option(__version__, prog_name="spinlet")
@click.option("--url", envvar="SPINLET_URL", help="Server URL (default http://127.0.0.1:7070).")
@click.option("--token", envvar="SPINLET_TOKEN", help="API token (SPINLET_TOKEN).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, as_json: bool, debug: bool) -> None:
    """Spinlet: a self-hosted serverless function platform.

    \b
    Examples:
      spinlet serve &
      spinlet functions create hello functions/hello.py
      spinlet invoke hello --input '{"name": "Ada"}'
      spinlet executions list --function hello

    Shell completion (commands and function names): see the README, or
    eval "$(_SPINLET_COMPLETE=bash_source spinlet)" in ~/.bashrc.
    """
    ctx.obj = {"url": url, "token": token, "client": None, "json": as_json, "debug": debug}


runtimes.add_command(runtimes_build)
runtimes.add_command(runtimes_check)
for command in WORKER_COMMANDS:
    functions.add_command(command)
for command in (
    serve,
    tokens,
    runtimes,
    functions,
    versions,
    aliases,
    webhooks,
    invoke,
    executions,
    invoke,
    executions,
    jobs,
    bench,
):
    cli.add_command(command)


def main() -> None:
    cli()
