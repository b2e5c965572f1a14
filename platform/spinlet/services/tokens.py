"""API tokens: made with a project and a role, shown once, stored as a hash; requests are
authenticated by looking the hash up.

A node remembers a valid token for a second (`REMEMBER`), so that a busy client costs one
lookup a second, not one a request: a token revoked elsewhere (`spinlet tokens revoke` works on
the store) stops working within that second; one revoked through this service, at once."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid

from spinlet.domain import ApiToken, Principal, Role, utcnow
from spinlet.errors import Unauthorized, ValidationFailed
from spinlet.store import Store

SECRET_PREFIX = "spl_"
REMEMBER = 1.0  # seconds a node trusts a token it looked up
_REMEMBERED_AT_MOST = 10_000
PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def secret_hash(secret: str) -> str:
    # The secrets are 256 random bits: a fast hash is as safe as a slow one for them.
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._valid: dict[str, tuple[Principal, float]] = {}  # by hash: until when

    async def create(
        self, project_id: str, role: Role, name: str | None = None
    ) -> tuple[ApiToken, str]:
        """A new token and its secret (the only time the secret is seen)."""
        if not PROJECT_ID.fullmatch(project_id):
            raise ValidationFailed(
                f"project {project_id!r}: use letters, digits, '_', '.' and '-' (64 at most)"
            )
        await self.store.projects.ensure(project_id, project_id)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            id=str(uuid.uuid4()),
            project_id=project_id,
            role=role,
            prefix=secret[:12],
            name=name,
        )
        return await self.store.tokens.create(token, secret_hash(secret)), secret

    async def list(self, project_id: str | None = None) -> list[ApiToken]:
        return await self.store.tokens.list(project_id)

    async def get(self, project_id: str, token_id: str) -> ApiToken:
        return await self.store.tokens.get(project_id, token_id)

    async def revoke(self, ref: str, project_id: str | None = None) -> ApiToken:
        """Revoke a token by id or prefix (of `project_id` only, when given): at once on this
        node, within `REMEMBER` seconds on the others."""
        revoked = await self.store.tokens.revoke(ref, utcnow(), project_id)
        self._valid.clear()
        return revoked

    async def has_admin(self) -> bool:
        return any(t.role is Role.ADMIN and t.revoked_at is None for t in await self.list())

    async def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthorized()
        digest, now = secret_hash(secret), time.monotonic()
        remembered = self._valid.get(digest)
        if remembered is not None and remembered[1] > now:
            return remembered[0]
        token = await self.store.tokens.find_active(digest)
        if token is None:
            self._valid.pop(digest, None)
            raise Unauthorized("the API token is not valid: it is unknown or was revoked")
        principal = Principal(project_id=token.project_id, role=token.role, token_id=token.id)
        if len(self._valid) >= _REMEMBERED_AT_MOST:
            self._valid.clear()
        self._valid[digest] = (principal, now + REMEMBER)
        return principal
