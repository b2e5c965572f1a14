"""Prometheus metrics of a node, served at `/metrics`."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from spinlet.domain import Execution

__all__ = ["CONTENT_TYPE", "Metrics"]

DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)


class Metrics:
    """One registry per node (so several apps in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.executions = Counter(
            "spinlet_executions",
            "Finished executions, by status and how their container was obtained.",
            ["status", "start_kind"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "spinlet_execution_duration_seconds",
            "Time the function ran, as measured in its container.",
            ["start_kind"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.init = Histogram(
            "spinlet_execution_init_seconds",
            "Time to obtain and initialise a container for an execution (cold and stem starts).",
            ["start_kind"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "spinlet_executions_rejected",
            "Executions refused for a concurrency limit (429).",
            registry=self.registry,
        )
        self.containers = Gauge(
            "spinlet_containers",
            "Containers held by this node, by state.",
            ["state"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "spinlet_queue_depth",
            "Asynchronous executions waiting to run (all nodes).",
            registry=self.registry,
        )
        self.running = Gauge(
            "spinlet_executions_running",
            "Executions running on this node now.",
            registry=self.registry,
        )

    def finished(self, execution: Execution) -> None:
        kind = execution.start_kind or "none"
        self.executions.labels(execution.status.value, kind).inc()
        if execution.duration_ms is not None:
            self.duration.labels(kind).observe(execution.duration_ms / 1000)
        if execution.init_ms is not None:
            self.init.labels(kind).observe(execution.init_ms / 1000)

    def refused(self) -> None:
        """An execution refused for a concurrency limit (429)."""
        self.rejected.inc()

    def snapshot(self, *, containers: Mapping[str, int], queue_depth: int, running: int) -> bytes:
        for state, count in containers.items():
            self.containers.labels(state).set(count)
        self.queue_depth.set(queue_depth)
        self.running.set(running)
        return generate_latest(self.registry)
