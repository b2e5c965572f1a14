"""Retention in two stages: results and logs expire first, records are purged later."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from spinlet.domain import utcnow
from spinlet.store import Store

log = logging.getLogger(__name__)


class Janitor:
    def __init__(
        self, store: Store, *, result_ttl: float, record_ttl: float, interval: float
    ) -> None:
        self.store = store
        self.result_ttl = result_ttl
        self.record_ttl = record_ttl
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> tuple[int, int]:
        """Expire old outputs and purge old records; returns how many of each."""
        now = utcnow()
        expired = await self.store.executions.expire_outputs(
            now - timedelta(seconds=self.result_ttl)
        )
        purged = await self.store.executions.purge(
            finished_before=now - timedelta(seconds=self.record_ttl)
        )
        if expired or purged:
            log.info("retention: %d result(s) expired, %d record(s) purged", expired, purged)
        return expired, purged

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="retention")

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed; trying again later")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
