"""A node: the store, the runtime backend and the services, opened in order and closed in
reverse. The HTTP application holds one (`api/app.py`); nothing else builds one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from spinlet.domain import DEFAULT_PROJECT
from spinlet.errors import Unavailable
from spinlet.layers.cache import LayerCache
from spinlet.livelogs import LiveLogs
from spinlet.metrics import Metrics
from spinlet.packages import PackageStore
from spinlet.runtime.backend import RuntimeBackend
from spinlet.runtime.catalog import catalog
from spinlet.runtime.factory import make_backend
from spinlet.services.aliases import AliasService
from spinlet.services.concurrency import ExecutionGates
from spinlet.services.dispatcher import Dispatcher
from spinlet.services.events import ExecutionEvents
from spinlet.services.executions import ExecutionService
from spinlet.services.functions import FunctionService
from spinlet.services.jobs import JobService
from spinlet.services.layers import LayerService
from spinlet.services.membership import Membership
from spinlet.services.metrics import MetricsService
from spinlet.services.remotelogs import FOLLOW, LOG, RemoteLogs
from spinlet.services.retention import Janitor
from spinlet.services.runner import ExecutionRunner
from spinlet.services.runtime_builds import DockerImages, HostPython, ImageMaker, RuntimeBuilds
from spinlet.services.runtimes import RuntimeService
from spinlet.services.scheduler import Scheduler
from spinlet.services.targets import TargetResolver
from spinlet.services.tokens import TokenService
from spinlet.services.versions import VersionService
from spinlet.services.webhooks import WebhookService
from spinlet.services.workers import WorkerService
from spinlet.settings import Settings
from spinlet.store import Store
from spinlet.store.notify import SCHEDULED, Notifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """What the HTTP handlers call."""

    store: Store
    backend: RuntimeBackend
    runtimes: RuntimeService
    functions: FunctionService
    executions: ExecutionService
    janitor: Janitor
    metrics: MetricsService
    runner: ExecutionRunner
    layers: LayerService
    versions: VersionService
    aliases: AliasService
    tokens: TokenService
    webhooks: WebhookService
    workers: WorkerService
    jobs: JobService

    async def check_ready(self, runtime_image: str) -> None:
        """Raise when this node cannot run executions now: its database or its container
        engine does not answer, or the runtime image is missing."""
        await self.store.ping()
        if await self.backend.image_id(runtime_image) is None:
            raise Unavailable(
                f"the runtime image {runtime_image} is missing; `spinlet runtimes build` makes it"
            )


@asynccontextmanager
async def running_node(
    settings: Settings, backend: RuntimeBackend | None = None, images: ImageMaker | None = None
) -> AsyncIterator[Services]:
    """A node that runs until the block ends (`backend`: one to use instead of the settings';
    `images`: where the shipped runtimes' images come from, instead of the backend's).

    Each part is closed once the block ends, or once a later part fails to start: in the
    reverse order of their starts.
    """
    node_id = settings.resolve_node_id()
    async with AsyncExitStack() as stack:
        store = await Store.open(settings.db_url, pool_size=settings.database_pool)
        stack.push_async_callback(store.close)
        await store.projects.ensure(DEFAULT_PROJECT, "default")
        tokens = TokenService(store)
        if settings.auth_enabled and not await tokens.has_admin():
            log.warning(
                "API tokens are required and none is an admin's yet: make the first with "
                "`spinlet tokens create --role admin` on this machine (same data dir or database)"
            )
        runtime_backend = backend or make_backend(
            settings.backend,
            node_id=node_id,
            work_dir=settings.run_dir(node_id),
            code_root=settings.code_root(node_id),
            keep_alive=settings.keep_alive,
            log_limit=settings.log_limit,
            max_containers=settings.max_containers,
            max_memory=settings.max_memory,
            max_project_containers=settings.project_containers,
            stem_cells=settings.stem_cells,
        )
        await runtime_backend.open()
        stack.push_async_callback(runtime_backend.close)
        # Nodes sharing a PostgreSQL store share the packages through it too.
        shared = store.blobs if store.db.dialect == "postgresql" else None
        package_store = PackageStore(settings.packages_dir, shared)
        if images is None:
            docker = settings.backend == "docker"
            images = DockerImages(runtime_backend.image_id) if docker else HostPython()
        # Every shipped runtime is offered; only the default's image is built up front (by
        # `spinlet serve`), the others on first use or when asked.
        builds = RuntimeBuilds(images, catalog(settings.runtime_image))
        stack.push_async_callback(builds.close)
        runtime_service = RuntimeService(store, runtime_backend, builds)
        await runtime_service.register_shipped()
        # First calls of functions with the default limits find a stem cell ready.
        runtime_backend.prewarm(
            settings.runtime_image, settings.default_memory_size, settings.default_cpu
        )
        notifier = Notifier(settings.db_url)
        events = ExecutionEvents(relay=notifier.send if notifier.enabled else None)
        live = LiveLogs()
        # A follower on another node gets the log of an execution running here over NOTIFY.
        remote_logs = RemoteLogs(notifier.send, live, store) if notifier.enabled else None
        on_finished = events.heard_finished
        if remote_logs is not None:
            notifier.on(FOLLOW, remote_logs.heard_follow)
            notifier.on(LOG, remote_logs.heard_log)

            def on_finished(execution_id: str) -> None:
                events.heard_finished(execution_id)
                remote_logs.ended(execution_id)

        notifier.on(SCHEDULED, events.heard_scheduled)
        await notifier.start(events.heard_queued, on_finished)
        stack.push_async_callback(notifier.stop)
        stack.push_async_callback(events.drain)
        gate = ExecutionGates(
            quota=settings.project_concurrency,
            max_waiting=settings.concurrency_queue,
            max_wait=settings.concurrency_wait,
        )
        targets = TargetResolver(store)
        metrics = Metrics()
        # Layers live beside the sandboxes' code directories: linked into them at /init.
        layer_cache = LayerCache(settings.code_root(node_id) / "layers")
        layers = LayerService(
            store, runtime_backend, layer_cache, settings, node_id=node_id, builds=builds
        )
        runner = ExecutionRunner(
            store,
            package_store,
            runtime_backend,
            targets,
            events,
            settings,
            layers,
            metrics,
            live,
            builds=builds,
        )
        dispatcher = Dispatcher(
            store, runner, events, gate, targets, node_id=node_id, workers=settings.workers
        )
        gate.when_free(dispatcher.slot_freed)
        workers = WorkerService(
            store,
            runtime_backend,
            targets,
            package_store,
            layers,
            builds,
            node_id=node_id,
            lease=settings.node_lease,
            capacity={
                "max_containers": settings.max_containers,
                "max_memory": settings.max_memory,
                "max_project_containers": settings.project_containers,
            },
        )
        membership = Membership(
            store,
            dispatcher,
            runner,
            node_id=node_id,
            interval=settings.heartbeat_interval,
            lease=settings.node_lease,
            cancel_grace=settings.cancel_grace,
            workers=workers,
        )
        janitor = Janitor(
            store,
            result_ttl=settings.result_ttl,
            record_ttl=settings.record_ttl,
            interval=settings.retention_interval,
        )
        await membership.start()  # registered before it claims anything
        stack.push_async_callback(membership.stop)
        stack.push_async_callback(runner.stop_all, "lost")  # what still runs once claims stop
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop, settings.shutdown_grace)
        janitor.start()
        stack.push_async_callback(janitor.stop)
        layers.start()
        stack.push_async_callback(layers.stop)
        executions = ExecutionService(
            store, runner, targets, events, gate, settings, node_id, remote_logs, builds=builds
        )
        # Fires jobs' ticks and queues scheduled executions (stopped before the dispatcher).
        scheduler = Scheduler(store, executions.builder, events)
        scheduler.start()
        stack.push_async_callback(scheduler.stop)
        log.info("spinlet node %s ready (store %s)", node_id, store.db.dialect)
        yield Services(
            store=store,
            backend=runtime_backend,
            runtimes=runtime_service,
            functions=FunctionService(
                store, package_store, runtime_backend, settings, layers, builds=builds
            ),
            executions=executions,
            janitor=janitor,
            metrics=MetricsService(metrics, store, runtime_backend, runner),
            runner=runner,
            layers=layers,
            versions=VersionService(store, package_store, runtime_backend, builds=builds),
            aliases=AliasService(store),
            tokens=tokens,
            webhooks=WebhookService(store, executions, rate=settings.webhook_rate),
            workers=workers,
            jobs=JobService(store, executions.builder, events),
        )
