"""How fast the executions list stays with many executions stored.

Seeds a fresh store with N executions spread over functions and statuses, then times the query
that must stay fast: one function's executions with one status, newest first, a page of 100,
and the next page through its marker.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from spinlet.domain import DEFAULT_PROJECT, FINAL_STATUSES, ExecutionStatus, utcnow
from spinlet.queries import ExecutionQuery, Filter
from spinlet.store import Store
from spinlet.store.tables import executions

STATUSES = sorted(s.value for s in {ExecutionStatus.RUNNING, *FINAL_STATUSES})


@dataclass(frozen=True)
class ListingResult:
    rows: int
    seed_seconds: float
    first_page_ms: list[float]
    next_page_ms: list[float]

    @property
    def summary(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "seed_s": round(self.seed_seconds, 1),
            "first_page_p50_ms": round(statistics.median(self.first_page_ms), 2),
            "first_page_max_ms": round(max(self.first_page_ms), 2),
            "next_page_p50_ms": round(statistics.median(self.next_page_ms), 2),
        }


async def seed(store: Store, rows: int, functions: int, chunk: int = 20_000) -> list[str]:
    function_ids = [str(uuid.uuid4()) for _ in range(functions)]
    start = utcnow() - timedelta(days=30)
    rng = random.Random(7)
    done = 0
    while done < rows:
        batch = []
        for i in range(done, min(rows, done + chunk)):
            created = start + timedelta(milliseconds=i * 2)
            batch.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "project_id": DEFAULT_PROJECT,
                    "function_id": rng.choice(function_ids),
                    "function_name": "bench",
                    "function_version": 0,
                    "status": rng.choice(STATUSES),
                    "sync": True,
                    "input": None,
                    "source": "api",
                    "expired": False,
                    "attempts": 1,
                    "created_at": created,
                    "finished_at": created,
                }
            )
        async with store.db.transaction() as conn:
            await conn.execute(executions.insert(), batch)
        done += len(batch)
    return function_ids


async def run(
    rows: int, *, functions: int = 100, repeat: int = 30, url: str | None = None
) -> ListingResult:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        await store.projects.ensure(DEFAULT_PROJECT, "default")
        started = time.perf_counter()
        function_ids = await seed(store, rows, functions)
        seed_seconds = time.perf_counter() - started
        first, following = [], []
        rng = random.Random(11)
        for _ in range(repeat):
            query = ExecutionQuery(
                project_id=DEFAULT_PROJECT,
                filters=(
                    Filter("function_id", "eq", rng.choice(function_ids)),
                    Filter("status", "eq", rng.choice(STATUSES)),
                ),
                limit=100,
            )
            t = time.perf_counter()
            page = await store.executions.list(query)
            first.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await store.executions.list(
                ExecutionQuery(
                    project_id=query.project_id,
                    filters=query.filters,
                    limit=100,
                    marker=page[-1].id,
                )
            )
            following.append((time.perf_counter() - t) * 1000)
        await store.close()
    return ListingResult(rows, seed_seconds, first, following)
