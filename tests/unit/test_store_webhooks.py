"""The webhook store, on SQLite and PostgreSQL: found by the secret id alone, in any project,
and by id only within its own; executions record the webhook that made them."""

from __future__ import annotations

from typing import Any

import pytest

from spinlet.domain import Execution, ExecutionSource, Function, Webhook, WebhookMode
from spinlet.errors import Forbidden, NotFound
from spinlet.queries import ExecutionQuery, Filter
from spinlet.services.webhooks import new_webhook_id
from spinlet.store import Store
from tests.unit.test_store import make_function


async def make_webhook(store: Store, function: Function, **fields: Any) -> Webhook:
    webhook = Webhook(id=new_webhook_id(), function_id=function.id, **fields)
    return await store.webhooks.create(webhook)


async def test_a_webhook_is_found_by_its_secret_and_gone_once_deleted(store: Store) -> None:
    function = await make_function(store)
    webhook = await make_webhook(store, function, mode=WebhookMode.HTTP, description="d")
    assert len(webhook.id) == 32 and webhook.id != new_webhook_id()
    assert await store.webhooks.find_by_secret(webhook.id) == webhook
    assert await store.webhooks.find_by_secret(webhook.id[:-1] + "x") is None
    assert await store.webhooks.find_by_secret("") is None
    assert await store.webhooks.get("default", webhook.id) == webhook
    assert await store.webhooks.list("default") == [webhook]
    assert await store.webhooks.list("default", function.id) == [webhook]

    await store.projects.ensure("other", "other")
    with pytest.raises(NotFound):
        await store.webhooks.get("other", webhook.id)
    assert await store.webhooks.list("other") == []
    with pytest.raises(NotFound):
        await store.webhooks.delete("other", webhook.id)

    changed = webhook.evolve(function_version=0, description="e", mode=WebhookMode.ASYNC)
    await store.webhooks.update(changed)
    assert await store.webhooks.get("default", webhook.id) == changed

    with pytest.raises(Forbidden, match="webhook"):
        await store.functions.delete(function)
    await store.webhooks.delete("default", webhook.id)
    assert await store.webhooks.find_by_secret(webhook.id) is None
    with pytest.raises(NotFound):
        await store.webhooks.delete("default", webhook.id)
    await store.functions.delete(function)


async def test_a_webhook_needs_its_function(store: Store) -> None:
    function = await make_function(store)
    missing = Webhook(id=new_webhook_id(), function_id="no-such-function")
    with pytest.raises(NotFound):
        await store.webhooks.create(missing)
    await store.projects.ensure("other", "other")
    elsewhere = Webhook(id=new_webhook_id(), function_id=function.id, project_id="other")
    with pytest.raises(NotFound):
        await store.webhooks.create(elsewhere)


async def test_executions_are_filtered_by_their_webhook(store: Store) -> None:
    function = await make_function(store)
    webhook = await make_webhook(store, function)
    made = Execution(
        id="e-hook",
        function_id=function.id,
        function_name=function.name,
        source=ExecutionSource.WEBHOOK,
        webhook_id=webhook.id,
    )
    await store.executions.create(made)
    await store.executions.create(
        Execution(id="e-api", function_id=function.id, function_name=function.name)
    )
    assert (await store.executions.get("default", "e-hook")).webhook_id == webhook.id
    query = ExecutionQuery(project_id="default", filters=(Filter("webhook_id", "eq", webhook.id),))
    assert [e.id for e in await store.executions.list(query)] == ["e-hook"]
