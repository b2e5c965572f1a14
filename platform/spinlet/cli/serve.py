"""`spinlet serve` and `spinlet runtimes build`: the commands that run on the node itself."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from spinlet.cli import output
from spinlet.settings import DEFAULT_PORT, Settings


def build_runtime_image(
    image: str, *, name: str = "python3", base: str | None = None, rebuild: bool = False
) -> str:
    """Build the image of the shipped runtime `name` as `image` (and its base, if no registry
    has one), showing each step."""
    import docker

    from spinlet.runtime.catalog import shipped
    from spinlet.runtime.images import ensure_runtime_image

    runtime = shipped(name)
    if runtime is None:
        raise click.ClickException(f"no shipped runtime is called {name!r}")

    console = output.console()
    started = time.monotonic()
    with console.status(f"runtime image {image}") as status:

        def progress(line: str) -> None:
            line = line.rstrip()
            if line:
                console.print(f"[dim]{line}[/dim]", highlight=False)
                status.update(f"runtime image {image}: {line[:70]}")

        client = docker.from_env()
        try:
            image_id = ensure_runtime_image(
                client, runtime=runtime, image=image, base=base, rebuild=rebuild, progress=progress
            )
        finally:
            client.close()
    console.print(
        f"runtime image [bold]{image}[/bold] ready ({image_id[:19]}, "
        f"{time.monotonic() - started:.1f}s)"
    )
    return image_id


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the SQLite database and packages live (default ~/.spinlet, SPINLET_DATA_DIR).",
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@data_dir_option
@click.option(
    "--backend",
    type=click.Choice(["docker", "process"]),
    help="Where functions run: docker (default) or process (local, no isolation; for tests).",
)
@click.option(
    "--auth",
    type=click.Choice(["on", "off", "auto"]),
    help="Require API tokens (SPINLET_AUTH; auto: unless listening on loopback only).",
)
@click.option("--no-build", is_flag=True, help="Do not build a missing runtime image.")
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    backend: str | None,
    auth: str | None,
    no_build: bool,
) -> None:
    """Run a Spinlet node: the API, the store and the container pool.

    \b
    Examples:
      spinlet serve
      spinlet serve --host 0.0.0.0 --auth on --data-dir /var/lib/spinlet
      SPINLET_DATABASE_URL=postgresql+asyncpg://spinlet@db/spinlet spinlet serve
    """
    from aiohttp import web

    from spinlet.api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    settings = Settings.from_env(
        host=host, port=port, data_dir=data_dir, backend=backend, auth=auth
    )
    if settings.backend == "docker" and not no_build:
        build_runtime_image(settings.runtime_image)
    tokens = "API tokens required" if settings.auth_enabled else "no API tokens"
    output.console().print(
        f"spinlet listening on [bold]http://{settings.host}:{settings.port}[/bold] "
        f"(data in {settings.data_dir}, backend {settings.backend}, {tokens}); Ctrl-C stops it",
        soft_wrap=True,
    )
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)


def _shipped_names() -> list[str]:
    from spinlet.runtime.catalog import CATALOG

    return [entry.name for entry in CATALOG]


@click.command("build")
@click.argument("name", default="python3", required=False)
@click.option("--rebuild", is_flag=True, help="Build even if the image exists.")
@click.option("--base", help="Base image (default: the runtime's public one, or a bootstrap).")
@click.option("--image", help="Tag of the runtime image (default: the runtime's own).")
def runtimes_build(name: str, rebuild: bool, base: str | None, image: str | None) -> None:
    """Build the image of a shipped runtime on this machine, bootstrapping a base image from
    Debian packages if none can be pulled. NAME: python3 (the default), python3.13, nodejs20.

    A node builds the others on first use too (`spinlet runtimes list` shows `building`).

    \b
    Examples:
      spinlet runtimes build
      spinlet runtimes build python3.13
      spinlet runtimes build --base python:3.11-slim-bookworm --image my/runtime:1
    """
    from spinlet.runtime.catalog import DEFAULT, shipped

    entry = shipped(name)
    if entry is None:
        known = ", ".join(_shipped_names())
        raise click.BadParameter(f"no shipped runtime is called {name!r} (shipped: {known})")
    default = Settings.from_env().runtime_image if entry is DEFAULT else entry.image
    build_runtime_image(image or default, name=name, base=base, rebuild=rebuild)
