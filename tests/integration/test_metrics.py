"""`/metrics` in Prometheus format counts what happened."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import eventually
from tests.integration.test_api import create, run

Client = TestClient[Any, Any]


async def scrape(api: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_executions_and_containers(process_api: Client) -> None:
    api = process_api

    async def stem_cells_ready() -> bool:
        return (await scrape(api)).get(("spinlet_containers", (("state", "stem"),))) == 2

    await eventually(stem_cells_ready)  # the node keeps two of the default shape
    await create(api, "echo", "echo")
    await create(api, "fail", "fail")
    await run(api, "echo", 1)
    await run(api, "echo", 2)
    await eventually(stem_cells_ready)
    await run(api, "fail")
    await eventually(stem_cells_ready)
    samples = await scrape(api)
    by = samples.get
    assert by(("spinlet_executions_total", (("start_kind", "stem"), ("status", "success")))) == 1
    assert by(("spinlet_executions_total", (("start_kind", "warm"), ("status", "success")))) == 1
    assert by(("spinlet_executions_total", (("start_kind", "stem"), ("status", "failed")))) == 1
    assert by(("spinlet_execution_duration_seconds_count", (("start_kind", "warm"),))) == 1
    assert by(("spinlet_containers", (("state", "idle"),))) == 2
    assert by(("spinlet_queue_depth", ())) == 0
    assert by(("spinlet_executions_running", ())) == 0
