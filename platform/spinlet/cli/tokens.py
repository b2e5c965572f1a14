"""`spinlet tokens`: API tokens, made on a node itself (they work on its store directly, so the
first admin token needs no token)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from spinlet.cli.output import emit, print_json, print_table
from spinlet.cli.serve import data_dir_option
from spinlet.settings import Settings

if TYPE_CHECKING:
    from spinlet.services.tokens import TokenService

_T = TypeVar("_T")
#: `spinlet.domain`'s project and role names, written here so that the other commands do not
#: load the domain (tests/unit/test_cli_imports.py checks that they agree).
DEFAULT_PROJECT = "default"
ROLES = ("admin", "member")


def with_tokens(data_dir: Path | None, work: Callable[[TokenService], Awaitable[_T]]) -> _T:
    """Run `work` on the node's own store (imported here: only these commands need it)."""
    import asyncio

    from spinlet.services.tokens import TokenService
    from spinlet.store import Store

    settings = Settings.from_env(data_dir=data_dir)

    async def run() -> _T:
        store = await Store.open(settings.db_url)
        try:
            return await work(TokenService(store))
        finally:
            await store.close()

    return asyncio.run(run())


@click.group()
def tokens() -> None:
    """API tokens: each belongs to a project and has a role (run these on a node)."""


@tokens.command("create")
@click.option("--project", default=DEFAULT_PROJECT, show_default=True, help="Made if new.")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="member",
    show_default=True,
)
@click.option("--name", help="What the token is for.")
@data_dir_option
@click.pass_context
def tokens_create(
    ctx: click.Context, project: str, role: str, name: str | None, data_dir: Path | None
) -> None:
    """Make a token; its secret is printed once (alone on stdout), then only its hash is kept."""
    from spinlet.api import serialize
    from spinlet.domain import Role

    token, secret = with_tokens(data_dir, lambda s: s.create(project, Role(role), name))
    if ctx.obj["json"]:
        print_json({**serialize.token(token), "token": secret})
        return
    click.echo(
        f"token {token.id} ({token.role.value} of project {token.project_id!r}); "
        "send it as the X-Auth-Token header (or SPINLET_TOKEN for the CLI). "
        "It is not shown again:",
        err=True,
    )
    click.echo(secret)


@tokens.command("list")
@click.option("--project", help="Only this project's tokens.")
@data_dir_option
@click.pass_context
def tokens_list(ctx: click.Context, project: str | None, data_dir: Path | None) -> None:
    """List tokens (their prefixes, never their secrets)."""
    from spinlet.api import serialize

    rows = [serialize.token(t) for t in with_tokens(data_dir, lambda s: s.list(project))]
    table = [{**row, "status": "revoked" if row["revoked_at"] else "active"} for row in rows]
    columns = ["prefix", "project_id", "role", "name", "status"]
    emit(ctx, rows, lambda: print_table(table, columns, "tokens (revoke by prefix or id)"))


@tokens.command("revoke")
@click.argument("token")
@data_dir_option
@click.pass_context
def tokens_revoke(ctx: click.Context, token: str, data_dir: Path | None) -> None:
    """Revoke a token, by id or prefix: requests with it fail from now on."""
    from spinlet.api import serialize

    revoked = with_tokens(data_dir, lambda s: s.revoke(token))
    emit(ctx, serialize.token(revoked), lambda: click.echo(f"revoked token {revoked.id}"))
