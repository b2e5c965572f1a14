"""`spinlet runtimes check IMAGE`: the runtime conformance suite on this machine's Docker."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from spinlet.cli.output import busy, console, emit
from spinlet.runtime.probes import LANGUAGES

if TYPE_CHECKING:
    from spinlet.runtime.conformance import Report


@click.command("check")
@click.argument("image")
@click.option(
    "--language",
    type=click.Choice(LANGUAGES),
    help="The language of the probe functions (default: what the image's spinlet.runtime "
    "label or /health says, else python).",
)
@click.pass_context
def runtimes_check(ctx: click.Context, image: str, language: str | None) -> None:
    """Check that IMAGE is a runtime Spinlet can run functions in (exit status 1 if not).

    Starts the image in local Docker, in the sandbox functions get, and runs the conformance
    suite: health, init, run, error, log capture, result too large, timeout. Each check
    passes or fails with its reason. See runtimes/README.md to write a runtime of your own.

    \b
    Examples:
      spinlet runtimes check spinlet/runtime-python3:1
      spinlet runtimes check acme/python-geo:1
      spinlet --json runtimes check acme/node-server:2 --language nodejs
    """
    with busy(ctx, f"checking {image}"):
        report = asyncio.run(_check(image, language))
    shown = {"image": report.image, "image_id": report.image_id, "language": report.language}
    emit(
        ctx,
        {**shown, "passed": report.passed, "checks": [asdict(r) for r in report.results]},
        lambda: print_report(report),
    )
    if not report.passed:
        ctx.exit(1)


async def _check(image: str, language: str | None) -> Report:
    """The whole suite, in a container of a node of its own (removed afterwards)."""
    from spinlet.runtime.conformance import check_image
    from spinlet.runtime.docker_driver import DockerDriver

    # Unix socket paths are short: not under a long temporary directory.
    root = Path(tempfile.mkdtemp(prefix="spl-check-", dir="/tmp"))
    driver = DockerDriver(f"check-{secrets.token_hex(4)}", root)
    try:
        return await check_image(driver, image, language=language)
    finally:
        await driver.close()
        shutil.rmtree(root, ignore_errors=True)


def print_report(report: Report) -> None:
    from rich.table import Table

    title = f"{report.image} ({report.image_id.removeprefix('sha256:')[:12]}, {report.language})"
    table = Table(title=title, title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("reason")
    for result in report.results:
        verdict = "[green]pass[/green]" if result.passed else "[bold red]FAIL[/bold red]"
        table.add_row(result.name, verdict, result.reason)
    console().print(table)
    failed = len(report.failures())
    if failed:
        console().print(f"{failed} of {len(report.results)} checks failed", style="red")
    else:
        console().print(f"all {len(report.results)} checks passed", style="green")
