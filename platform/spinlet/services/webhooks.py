"""Webhooks: URLs that run a function without a token (the id is the secret), queued as
Qinling's do, or at once with an HTTP event (`mode: http`); a project's calls per second are
capped on each node."""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from spinlet.domain import Execution, ExecutionSource, Webhook, WebhookMode, utcnow
from spinlet.errors import NotFound, ValidationFailed, WebhookRateLimited
from spinlet.services.executions import ExecutionRequest, ExecutionService
from spinlet.store import Store

#: Random bytes in a webhook's id (hex: twice as many characters). 128 bits: as hard to guess
#: as an API token, and still a 32-hex-digit string that clients taking UUIDs accept.
ID_BYTES = 16


def new_webhook_id() -> str:
    return secrets.token_hex(ID_BYTES)


@dataclass(frozen=True)
class WebhookFields:
    """What a create or update sets; None means "not given" (unchanged on update)."""

    function: str | None = None  # id or name
    alias: str | None = None
    version: int | None = None
    description: str | None = None
    mode: WebhookMode | None = None


class CallRate:
    """Each project's webhook calls per second on this node, at most (a moving window)."""

    def __init__(self, per_second: int) -> None:
        self.item = RateLimitItemPerSecond(per_second)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def take(self, project_id: str) -> None:
        """Count a call, or refuse it (`WebhookRateLimited`, with when to try again)."""
        if await self.limiter.hit(self.item, project_id):
            return
        stats = await self.limiter.get_window_stats(self.item, project_id)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise WebhookRateLimited(
            f"more than {self.item.amount} webhook calls per second for this project; "
            f"try again in {retry_after} s",
            retry_after=retry_after,
        )


class WebhookService:
    def __init__(self, store: Store, executions: ExecutionService, *, rate: int) -> None:
        self.store = store
        self.executions = executions
        self.rate = CallRate(rate)

    async def _target(self, project_id: str, webhook: Webhook, fields: WebhookFields) -> Webhook:
        """The webhook pointed as `fields` say: through an alias (which picks the function and
        the version), or at a function and a version (0: its current code), checked as an
        execution's target is."""
        alias = webhook.function_alias if fields.alias is None else fields.alias or None
        version = fields.version
        if version is None:  # an alias given anew picks the version itself
            version = 0 if fields.alias else webhook.function_version
        if version < 0:
            raise ValidationFailed("function_version must be 0 (current code) or more")
        function = fields.function or (None if alias else webhook.function_id)
        target = await self.executions.targets.resolve(project_id, function, version, alias)
        return webhook.evolve(
            function_id=target.function_id,
            function_alias=target.alias,
            function_version=0 if alias else version,
        )

    async def create(self, project_id: str, fields: WebhookFields) -> Webhook:
        blank = Webhook(
            id=new_webhook_id(),
            function_id="",
            mode=fields.mode or WebhookMode.ASYNC,
            description=fields.description,
            project_id=project_id,
        )
        return await self.store.webhooks.create(await self._target(project_id, blank, fields))

    async def get(self, project_id: str, webhook_id: str) -> Webhook:
        return await self.store.webhooks.get(project_id, webhook_id)

    async def list(self, project_id: str | None, function: str | None = None) -> list[Webhook]:
        """The project's webhooks (None: every project's, and `function` is then an id)."""
        function_id = function
        if function is not None and project_id is not None:
            function_id = (await self.store.functions.get(project_id, function)).id
        return await self.store.webhooks.list(project_id, function_id)

    async def update(self, project_id: str, webhook_id: str, fields: WebhookFields) -> Webhook:
        """Change what is given (null fields stay as they are, as the Qinling client sends)."""
        webhook = await self.store.webhooks.get(project_id, webhook_id)
        if fields.alias is None and (fields.function is not None or fields.version):
            # A function or a version given without an alias replaces the alias.
            fields = replace(fields, alias="")
        changed = (await self._target(project_id, webhook, fields)).evolve(
            description=webhook.description if fields.description is None else fields.description,
            mode=fields.mode or webhook.mode,
            updated_at=utcnow(),
        )
        return await self.store.webhooks.update(changed)

    async def delete(self, project_id: str, webhook_id: str) -> None:
        await self.store.webhooks.delete(project_id, webhook_id)

    async def called(self, webhook_id: str) -> Webhook:
        """The webhook a call without a token is for (404 for any other id), counted against
        its project's rate (429 beyond it)."""
        webhook = await self.store.webhooks.find_by_secret(webhook_id)
        if webhook is None:
            raise NotFound("webhook not found")
        await self.rate.take(webhook.project_id)
        return webhook

    async def run(self, webhook: Webhook, event: Any) -> Execution:
        """An execution of the webhook's function with `event` as its input: queued (async
        mode) or run to its end (http mode)."""
        execution, _ = await self.executions.create(
            webhook.project_id,
            ExecutionRequest(
                function=None if webhook.function_alias else webhook.function_id,
                alias=webhook.function_alias,
                version=0 if webhook.function_alias else webhook.function_version,
                input=event,
                sync=webhook.mode is WebhookMode.HTTP,
                source=ExecutionSource.WEBHOOK,
                webhook_id=webhook.id,
            ),
        )
        return execution
