"""API tokens in the store (SQLite and PostgreSQL): found by their secret's hash, revocable."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from spinlet.domain import Role, utcnow
from spinlet.errors import NotFound, Unauthorized, ValidationFailed
from spinlet.services.tokens import REMEMBER, TokenService
from spinlet.store import Store
from spinlet.store.tables import tokens


async def test_tokens_are_kept_hashed_found_by_secret_and_revoked(store: Store) -> None:
    service = TokenService(store)
    admin, admin_secret = await service.create("ops", Role.ADMIN, "first")
    member, member_secret = await service.create("acme", Role.MEMBER)
    assert admin_secret != member_secret and admin_secret.startswith(admin.prefix)
    assert await service.has_admin()

    principal = await service.authenticate(member_secret)
    assert (principal.project_id, principal.role, principal.token_id) == (
        "acme",
        Role.MEMBER,
        member.id,
    )
    assert (await service.authenticate(admin_secret)).is_admin
    # Only hashes are stored: no column holds a secret.
    rows = await store.db.read(lambda conn: conn.execute(select(tokens)).all())
    assert not [row for row in rows for value in row if value in (admin_secret, member_secret)]
    assert [t.project_id for t in await service.list()] == ["ops", "acme"]
    assert [t.id for t in await service.list("acme")] == [member.id]

    revoked = await service.revoke(member.prefix)
    assert revoked.revoked_at is not None
    assert (await service.revoke(member.id)).revoked_at == revoked.revoked_at  # no-op
    for secret in (member_secret, "spl_unknown", ""):
        with pytest.raises(Unauthorized):
            await service.authenticate(secret)
    with pytest.raises(NotFound):
        await service.revoke("no-such-token")
    await service.revoke(admin.id)
    assert not await service.has_admin()


async def test_project_names_are_checked(store: Store) -> None:
    with pytest.raises(ValidationFailed):
        await TokenService(store).create("../etc", Role.MEMBER)


async def test_a_token_revoked_elsewhere_stops_working_within_a_second(store: Store) -> None:
    node = TokenService(store)  # the server's, remembering valid tokens for a second
    token, secret = await node.create("acme", Role.MEMBER)
    await node.authenticate(secret)
    await store.tokens.revoke(token.id, utcnow())  # as `spinlet tokens revoke` does it
    await asyncio.sleep(REMEMBER)
    with pytest.raises(Unauthorized):
        await node.authenticate(secret)
