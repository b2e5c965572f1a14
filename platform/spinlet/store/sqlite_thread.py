"""The SQLite file's own thread: whole transactions in one hop, writes committed in groups.

aiosqlite hands every cursor call to its thread and back (about eight hops per statement, ~1 ms
here). This runs a transaction, written as a function of a synchronous `Connection`, on one
thread holding one connection of the standard `sqlite3` driver: one hop per transaction.
Writes that arrive while the thread is busy are committed together (group commit): each still
answers only once its commit is done. Should one of a group fail, the group is rolled back and
each write is run again in a transaction of its own, so that only the failing one fails; write
functions therefore touch nothing but the database. A group that finds the file locked by another
process fails whole: that is no write's fault, and each would wait out the busy timeout again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import URL, Connection, Engine, create_engine, event

from spinlet.store.errors import sqlite_locked

_T = TypeVar("_T")
Work = Callable[[Connection], Any]


class SQLiteThread:
    def __init__(
        self, url: URL, on_connect: Callable[[Any, Any], None], write_lock: asyncio.Lock
    ) -> None:
        self._engine: Engine = create_engine(
            url.set(drivername="sqlite+pysqlite"),
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=1,
        )
        event.listen(self._engine, "connect", on_connect)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="spinlet-sqlite")
        self._conn: Connection | None = None  # opened and used in the thread only
        self._write_lock = write_lock  # shared with the store's other writers
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def read(self, fn: Callable[[Connection], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._one, fn)

    async def write(self, fn: Callable[[Connection], _T]) -> _T:
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="spinlet-sqlite-commit")
        return await future

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        await asyncio.to_thread(self._shutdown)  # joins the thread: not on the event loop

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self._engine.dispose()

    # -- on the event loop ------------------------------------------------------------------

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            async with self._write_lock:
                batch, self._pending = self._pending, []
                outcomes = await loop.run_in_executor(
                    self._executor, self._group, [fn for fn, _ in batch]
                )
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # its caller gave up waiting; the write is done all the same
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    # -- in the thread ----------------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _one(self, fn: Callable[[Connection], _T]) -> _T:
        conn = self._connection()
        with conn.begin():
            return fn(conn)

    def _group(self, fns: list[Work]) -> list[tuple[bool, Any]]:
        conn = self._connection()
        if len(fns) > 1:
            try:
                with conn.begin():
                    return [(True, fn(conn)) for fn in fns]
            except Exception as exc:
                if sqlite_locked(exc):  # another process holds the file: no write's fault
                    return [(False, exc)] * len(fns)
                # one failed and all were rolled back: run each on its own
        outcomes: list[tuple[bool, Any]] = []
        for fn in fns:
            try:
                outcomes.append((True, self._one(fn)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
