"""The stored counts of provisioned containers and the nodes' published reports, on both
stores."""

from __future__ import annotations

from datetime import timedelta

import pytest

from spinlet.domain import utcnow
from spinlet.errors import NotFound
from spinlet.store import Store
from spinlet.store.scaling import Provisioned
from tests.unit.test_store import make_function


async def test_counts_go_up_down_never_below_none_and_to_none(store: Store) -> None:
    kept = await make_function(store, "kept")
    other = await make_function(store, "other")
    assert await store.scaling.scale("default", kept.id, 3) == 3
    assert await store.scaling.scale("default", kept.id, -1) == 2
    assert await store.scaling.scale("default", other.id, -5) == 0
    assert await store.scaling.wanted() == [Provisioned("default", kept.id, 2)]
    assert await store.scaling.scale("default", kept.id, None) == 0
    assert await store.scaling.wanted() == []


async def test_another_projects_function_cannot_be_scaled(store: Store) -> None:
    function = await make_function(store)
    await store.projects.ensure("p2", "second")
    with pytest.raises(NotFound):
        await store.scaling.scale("p2", function.id, 1)
    assert await store.scaling.count("default", function.id) == 0


async def test_reports_of_the_nodes_within_the_lease(store: Store) -> None:
    now = utcnow()
    await store.nodes.heartbeat("old", now - timedelta(seconds=60), {"workers": [1]})
    await store.nodes.heartbeat("new", now, {"workers": [2]})
    await store.nodes.heartbeat("new", now)  # a beat without a report keeps the last one
    assert await store.nodes.reports(now - timedelta(seconds=10)) == {"new": {"workers": [2]}}
