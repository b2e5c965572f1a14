"""Webhooks: the store finds one by its id's SHA-256, then compares the id in constant time."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from spinlet.domain import Webhook, WebhookMode
from spinlet.errors import NotFound
from spinlet.store.database import Database
from spinlet.store.locks import lock_function
from spinlet.store.tables import webhooks


def secret_hash(webhook_id: str) -> str:
    return hashlib.sha256(webhook_id.encode()).hexdigest()


def _webhook(row: Row[Any]) -> Webhook:
    return Webhook(
        id=row.id,
        function_id=row.function_id,
        function_alias=row.function_alias,
        function_version=row.function_version,
        mode=WebhookMode(row.mode),
        description=row.description,
        project_id=row.project_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _values(webhook: Webhook) -> dict[str, Any]:
    return {
        "function_id": webhook.function_id,
        "function_alias": webhook.function_alias,
        "function_version": webhook.function_version,
        "mode": webhook.mode.value,
        "description": webhook.description,
        "updated_at": webhook.updated_at,
    }


async def webhook_ids(conn: AsyncConnection, project_id: str, function_id: str) -> list[str]:
    """The webhooks that run a function."""
    query = (
        select(webhooks.c.id)
        .where(webhooks.c.project_id == project_id)
        .where(webhooks.c.function_id == function_id)
        .order_by(webhooks.c.created_at, webhooks.c.id)
    )
    return list((await conn.execute(query)).scalars())


class WebhookRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, webhook: Webhook) -> Webhook:
        async with self.db.transaction() as conn:
            if not await lock_function(conn, webhook.project_id, webhook.function_id):
                raise NotFound(f"function {webhook.function_id!r} not found")
            await conn.execute(
                webhooks.insert().values(
                    id=webhook.id,
                    secret_sha256=secret_hash(webhook.id),
                    project_id=webhook.project_id,
                    created_at=webhook.created_at,
                    **_values(webhook),
                )
            )
        return webhook

    async def update(self, webhook: Webhook) -> Webhook:
        async with self.db.transaction() as conn:
            if not await lock_function(conn, webhook.project_id, webhook.function_id):
                raise NotFound(f"function {webhook.function_id!r} not found")
            done = await conn.execute(
                update(webhooks)
                .where(webhooks.c.id == webhook.id)
                .where(webhooks.c.project_id == webhook.project_id)
                .values(**_values(webhook))
            )
            if not done.rowcount:
                raise NotFound(f"webhook {webhook.id!r} not found")
        return webhook

    async def get(self, project_id: str, webhook_id: str) -> Webhook:
        query = (
            select(webhooks)
            .where(webhooks.c.project_id == project_id)
            .where(webhooks.c.id == webhook_id)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        return _webhook(row)

    async def find_by_secret(self, webhook_id: str) -> Webhook | None:
        """The webhook whose id this is, in any project: looked up by the id's SHA-256, so
        that neither the index nor the comparison takes longer the more of an id is right."""
        query = select(webhooks).where(webhooks.c.secret_sha256 == secret_hash(webhook_id))
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or not hmac.compare_digest(row.id.encode(), webhook_id.encode()):
            return None
        return _webhook(row)

    async def list(self, project_id: str | None, function_id: str | None = None) -> list[Webhook]:
        """The project's webhooks (None: every project's), oldest first."""
        query = select(webhooks)
        if project_id is not None:
            query = query.where(webhooks.c.project_id == project_id)
        if function_id is not None:
            query = query.where(webhooks.c.function_id == function_id)
        async with self.db.connect() as conn:
            rows = await conn.execute(query.order_by(webhooks.c.created_at, webhooks.c.id))
            return [_webhook(row) for row in rows]

    async def delete(self, project_id: str, webhook_id: str) -> None:
        async with self.db.transaction() as conn:
            done = await conn.execute(
                delete(webhooks)
                .where(webhooks.c.project_id == project_id)
                .where(webhooks.c.id == webhook_id)
            )
        if not done.rowcount:
            raise NotFound(f"webhook {webhook_id!r} not found")
