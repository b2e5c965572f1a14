"""What `/metrics` shows: the node's counters, and gauges read from their owners when scraped."""

from __future__ import annotations

from spinlet.metrics import Metrics
from spinlet.runtime.backend import RuntimeBackend
from spinlet.services.runner import ExecutionRunner
from spinlet.store import Store

#: The container states shown, each always (0 when there is none).
CONTAINER_STATES = ("starting", "stem", "busy", "idle")


class MetricsService:
    def __init__(
        self, metrics: Metrics, store: Store, backend: RuntimeBackend, runner: ExecutionRunner
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._backend = backend
        self._runner = runner

    async def scrape(self) -> bytes:
        """The node's metrics in Prometheus' text format."""
        stats = self._backend.stats()  # places being made count as starting
        return self._metrics.snapshot(
            containers={state: stats.get(state, 0) for state in CONTAINER_STATES},
            queue_depth=await self._store.executions.queue_depth(),
            running=self._runner.running,
        )
