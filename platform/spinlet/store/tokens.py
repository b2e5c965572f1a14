"""API tokens, found by the hash of their secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from spinlet.domain import ApiToken, Role
from spinlet.errors import NotFound
from spinlet.store.database import Database
from spinlet.store.tables import tokens


def _token(row: Row[Any]) -> ApiToken:
    return ApiToken(
        id=row.id,
        project_id=row.project_id,
        role=Role(row.role),
        prefix=row.prefix,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class TokenRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, token: ApiToken, secret_sha256: str) -> ApiToken:
        statement = tokens.insert().values(
            id=token.id,
            project_id=token.project_id,
            role=token.role.value,
            name=token.name,
            prefix=token.prefix,
            secret_sha256=secret_sha256,
            created_at=token.created_at,
            revoked_at=None,
        )
        await self.db.write(lambda conn: conn.execute(statement))
        return token

    async def find_active(self, secret_sha256: str) -> ApiToken | None:
        """The token with that secret, unless it was revoked."""
        query = (
            select(tokens)
            .where(tokens.c.secret_sha256 == secret_sha256)
            .where(tokens.c.revoked_at.is_(None))
        )
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return _token(row) if row is not None else None

    async def list(self, project_id: str | None = None) -> list[ApiToken]:
        query = select(tokens).order_by(tokens.c.created_at, tokens.c.id)
        if project_id is not None:
            query = query.where(tokens.c.project_id == project_id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_token(row) for row in rows]

    async def get(self, project_id: str, token_id: str) -> ApiToken:
        query = select(tokens).where(tokens.c.project_id == project_id, tokens.c.id == token_id)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFound(f"token {token_id!r} not found")
        return _token(row)

    async def revoke(self, ref: str, now: datetime, project_id: str | None = None) -> ApiToken:
        """Revoke a token by id or prefix (revoking a revoked one changes nothing), of
        `project_id` only when given."""
        which = (tokens.c.id == ref) | (tokens.c.prefix == ref)
        if project_id is not None:
            which = which & (tokens.c.project_id == project_id)
        query = select(tokens).where(which)
        statement = (
            update(tokens).where(which, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
        )

        def write(conn: Connection) -> list[Row[Any]]:
            rows = conn.execute(query).all()
            if len(rows) == 1:
                conn.execute(statement)
                rows = conn.execute(query).all()
            return list(rows)

        rows = await self.db.write(write)
        if not rows:
            raise NotFound(f"token {ref!r} not found")
        if len(rows) > 1:
            raise NotFound(f"token prefix {ref!r} is ambiguous; give the token id")
        return _token(rows[0])
