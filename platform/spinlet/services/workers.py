"""A function's workers across the fleet, and its provisioned containers (Qinling's scale_up).

**Publishing.** With each heartbeat a node publishes its report (`report()`): its warm
containers (a function's *workers*), its capacity (caps and what is in use) and the runtimes
built on it. Any node answers `GET /v1/functions/{id}/workers` from the reports of the nodes
whose heartbeat is within the lease, its own containers as they are now.

**Scaling.** `scale_up`/`scale_down`/`detach` change the function's stored count (never below
0); the fleet keeps that many containers initialised for the function's current code (version
0), which the reaper and evictions leave alone, so its next calls start `warm`. Each node keeps
its *share*: the live nodes, sorted by id, split the count, the first ones taking one more when
it does not divide (`share()`: every node computes the same split without talking to the
others, so two nodes never both start the whole count). A node that lacks room for its share
starts what fits and publishes how many it is short; the other nodes take that shortfall over,
split the same way among those that are not short themselves. The node that receives the
request applies its share at once (on one node: the whole count, before the answer); the others
on their next heartbeat. A function's code or configuration changing makes its provisioned
containers another version: each node replaces them on its next heartbeat. A count beyond what
the fleet has room for is kept: the containers that fit are started, the answer says how many,
and the rest start when room frees up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spinlet.domain import FunctionStatus, RuntimeStatus, utcnow
from spinlet.errors import SpinletError
from spinlet.packages import PackageStore
from spinlet.runtime.backend import ContainerInfo, RuntimeBackend
from spinlet.services.layers import LayerService
from spinlet.services.runtime_builds import RuntimeBuilds
from spinlet.services.targets import Target, TargetResolver
from spinlet.store import Store

log = logging.getLogger(__name__)


def share(count: int, nodes: Sequence[str], me: str, short: Mapping[str, int]) -> int:
    """How many of a function's `count` provisioned containers node `me` keeps, among the live
    `nodes` (sorted the same way on every node), given how many each node published it lacked
    room for (`short`)."""
    if count <= 0 or me not in nodes:
        return 0
    rank, size = nodes.index(me), len(nodes)
    own = count // size + (1 if rank < count % size else 0)
    if short.get(me, 0) > 0:
        return own  # short itself: it takes none of the others' shortfall
    helpers = [node for node in nodes if short.get(node, 0) <= 0]
    spill = sum(short.get(node, 0) for node in nodes if node != me)
    rank, size = helpers.index(me), len(helpers)
    return own + spill // size + (1 if rank < spill % size else 0)


@dataclass(frozen=True)
class Worker:
    """A warm container of a function, on some node of the fleet."""

    worker_name: str
    function_id: str
    function_version: int
    node_id: str
    state: str  # starting | busy | idle
    provisioned: bool
    since: datetime

    @classmethod
    def of(cls, container: ContainerInfo, node_id: str) -> Worker:
        assert container.function_id is not None
        return cls(
            worker_name=container.name or container.id,
            function_id=container.function_id,
            function_version=container.version or 0,
            node_id=node_id,
            state=container.state,
            provisioned=container.provisioned,
            since=datetime.fromtimestamp(container.created_at, UTC),
        )

    def published(self) -> dict[str, Any]:
        return {
            "worker_name": self.worker_name,
            "function_id": self.function_id,
            "function_version": self.function_version,
            "state": self.state,
            "provisioned": self.provisioned,
            "since": self.since.isoformat(),
        }

    @classmethod
    def read(cls, raw: Mapping[str, Any], node_id: str) -> Worker:
        return cls(
            worker_name=str(raw["worker_name"]),
            function_id=str(raw["function_id"]),
            function_version=int(raw["function_version"]),
            node_id=node_id,
            state=str(raw["state"]),
            provisioned=bool(raw.get("provisioned")),
            since=datetime.fromisoformat(str(raw["since"])),
        )


@dataclass(frozen=True)
class Scaled:
    """The answer to a scale request: the stored count, and what the fleet holds now."""

    function_id: str
    count: int  # provisioned containers asked for, fleet-wide
    workers: int  # provisioned containers the fleet holds now (this node's as they are now)
    message: str


class WorkerService:
    def __init__(
        self,
        store: Store,
        backend: RuntimeBackend,
        targets: TargetResolver,
        package_store: PackageStore,
        layers: LayerService,
        builds: RuntimeBuilds,
        *,
        node_id: str,
        lease: float,
        capacity: Mapping[str, int | None],
    ) -> None:
        self.store = store
        self.backend = backend
        self.targets = targets
        self.package_store = package_store
        self.layers = layers
        self.builds = builds
        self.node_id = node_id
        self.lease = lease
        self.capacity = capacity  # max_containers, max_memory, max_project_containers
        self._short: dict[str, int] = {}  # by function id: what this node lacked room for
        self._running: asyncio.Task[None] | None = None
        self._changes = 0  # counts changed through this node (`scale`)

    # -- publishing --------------------------------------------------------------------------

    async def report(self) -> dict[str, Any]:
        """What this node publishes with its heartbeat."""
        stats = self.backend.stats()
        built = [
            entry.name
            for entry in self.builds.catalog
            if (await self.builds.state(entry)).status is RuntimeStatus.AVAILABLE
        ]
        return {
            "workers": [worker.published() for worker in await self._mine()],
            "capacity": {
                **self.capacity,
                "containers": stats["containers"],
                "memory_bytes": stats["memory_bytes"],
            },
            "runtimes": built,
            "short": {fid: n for fid, n in self._short.items() if n > 0},
        }

    async def of_function(self, project_id: str, function_ref: str) -> list[Worker]:
        """The function's warm containers on the live nodes, this one's as they are now."""
        function = await self.store.functions.get(project_id, function_ref)
        found = [w for w in await self._mine() if w.function_id == function.id]
        for node_id, report in (await self._live()).items():
            if node_id == self.node_id:
                continue
            for raw in report.get("workers", ()):
                if raw.get("function_id") == function.id:
                    found.append(Worker.read(raw, node_id))
        return sorted(found, key=lambda w: (w.since, w.node_id, w.worker_name))

    async def _mine(self) -> list[Worker]:
        return [
            Worker.of(container, self.node_id)
            for container in await self.backend.containers()
            if container.function_id is not None and container.state != "stem"
        ]

    async def _live(self) -> dict[str, dict[str, Any]]:
        return await self.store.nodes.reports(utcnow() - timedelta(seconds=self.lease))

    # -- scaling -----------------------------------------------------------------------------

    async def scale(self, project_id: str, function_ref: str, delta: int | None) -> Scaled:
        """Change the function's count by `delta` (None: to 0, detach) and apply this node's
        share of it now."""
        function = await self.store.functions.get(project_id, function_ref)
        count = await self.store.scaling.scale(project_id, function.id, delta)
        self._changes += 1  # a round of `reconcile` that read the counts before stops
        live = await self._live()
        nodes = sorted({*live, self.node_id})
        mine = share(count, nodes, self.node_id, self._shortfalls(live, function.id))
        problem = None
        try:
            if not await self._keep(project_id, function.id, mine):
                problem = "its dependencies are being built: they start once it is available"
        except SpinletError as exc:
            problem = exc.message
        elsewhere = sum(
            1
            for node_id, report in live.items()
            if node_id != self.node_id
            for raw in report.get("workers", ())
            if raw.get("function_id") == function.id and raw.get("provisioned")
        )
        here = sum(1 for w in await self._mine() if w.function_id == function.id and w.provisioned)
        return Scaled(
            function.id, count, here + elsewhere, _message(count, here, mine, elsewhere, problem)
        )

    def _shortfalls(
        self, live: Mapping[str, Mapping[str, Any]], function_id: str
    ) -> dict[str, int]:
        short = {
            node_id: int(report.get("short", {}).get(function_id, 0))
            for node_id, report in live.items()
        }
        short[self.node_id] = self._short.get(function_id, 0)
        return short

    async def _keep(
        self, project_id: str, function_id: str, count: int, changes: int | None = None
    ) -> bool:
        """Keep `count` containers provisioned here for the function's current code; False
        when its dependencies are being built (a later heartbeat starts them). With
        `changes`, nothing is done once a count was changed since (`reconcile`)."""
        if count <= 0:
            self.backend.unprovision(function_id)
            self._short.pop(function_id, None)
            return True
        target = await self.targets.target(project_id, function_id, 0)
        if target.status is not FunctionStatus.AVAILABLE:
            return False
        await self.builds.wait(target.image)
        if changes is not None and changes != self._changes:
            return True
        kept = await self.backend.provision(target.spec(), count, *self._loaders(target))
        self._short[function_id] = count - kept
        return True

    def _loaders(
        self, target: Target
    ) -> tuple[Callable[[], Awaitable[bytes]], Callable[[], Awaitable[Path]] | None]:
        sha256, layer_id = target.package.sha256, target.layer_id

        async def load_code() -> bytes:
            return await self.package_store.get(sha256)

        if layer_id is None:
            return load_code, None

        async def load_layer() -> Path:
            return await self.layers.local(layer_id)

        return load_code, load_layer

    # -- honouring the counts on each heartbeat ----------------------------------------------

    def beat(self) -> None:
        """Bring this node's provisioned containers in line with the counts (in the
        background: starting containers must not hold the heartbeat up)."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self.reconcile(), name="spinlet-workers")

    async def stop(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
            self._running = None

    async def reconcile(self) -> None:
        """Each function's share kept here; functions no longer scaled (or deleted) released.

        A count changed through this node meanwhile ends the round (the next one reads it):
        a count read before a detach must not start containers again after it."""
        changes = self._changes
        wanted = await self.store.scaling.wanted()
        live = await self._live()
        nodes = sorted({*live, self.node_id})
        for item in wanted:
            if self._changes != changes:
                return
            mine = share(item.count, nodes, self.node_id, self._shortfalls(live, item.function_id))
            try:
                await self._keep(item.project_id, item.function_id, mine, changes)
            except SpinletError as exc:
                log.warning("function %s: provisioned containers: %s", item.function_id, exc)
        scaled = {item.function_id for item in wanted}
        if self._changes != changes:
            return
        for container in await self.backend.containers():
            fid = container.function_id
            if container.provisioned and fid is not None and fid not in scaled:
                self.backend.unprovision(fid)
                self._short.pop(fid, None)
        for fid in [fid for fid in self._short if fid not in scaled]:
            del self._short[fid]


def _message(count: int, here: int, mine: int, elsewhere: int, problem: str | None) -> str:
    if problem is not None:
        return f"{count} provisioned container(s) asked for; none could start here: {problem}"
    if here < mine:
        return (
            f"{count} provisioned container(s) asked for; {here} of this node's {mine} started "
            "(no room for more now: the rest start when room frees up or on other nodes)"
        )
    if elsewhere or mine < count:
        return (
            f"{count} provisioned container(s) asked for: {here} on this node, {elsewhere} on "
            "others (each node starts its share on its next heartbeat)"
        )
    return f"{count} provisioned container(s) kept"
