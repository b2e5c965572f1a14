"""Dependency layers: the builds that resolve requirements, and the layers they store.

A build is shared by every function asking for the same requirements on the same runtime. Any
node may claim a `building` one for a lease (a conditional update: two nodes never both get
it) and renew it while it works; one whose lease lapsed (its node died) is taken over by
another. Finishing or failing a build moves the functions waiting on it in the same
transaction. Every status change of a build or of a function goes through `_moving` over a
`domain.transition`, so it is written only from the statuses `FUNCTION_TRANSITIONS` allows.

A layer's archive is stored in chunks, one statement each, and read back one query per chunk:
a layer is never whole in memory. It is usable once `complete`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from spinlet.domain import FunctionStatus, Layer, LayerBuild, Transition, transition, utcnow
from spinlet.errors import LayerBuildFailed, NotFound
from spinlet.store.database import Database
from spinlet.store.tables import function_versions, functions, layer_builds, layer_chunks, layers

log = logging.getLogger(__name__)

F = FunctionStatus
#: Claiming changes a build's holder, not its status: it takes only `building` ones.
_CLAIMABLE = [F.BUILDING.value]
_FINISH = transition(F.BUILDING, F.AVAILABLE)
_FAIL = transition(F.BUILDING, F.ERROR)
_RETRY = transition(F.ERROR, F.BUILDING)
_REBUILD = transition((F.AVAILABLE, F.ERROR), F.BUILDING)

#: An upload that started longer ago than this and is still incomplete was left by a builder
#: that died: the next save of that layer replaces it. Layers younger than this are never
#: dropped either, so a layer stored a moment before its build is finished stays.
UPLOAD_GRACE = timedelta(minutes=15)


@functools.cache
def _moving(table: Table, change: Transition[FunctionStatus]) -> Update:
    """The conditional update of a status change of a build or a function, built once: it
    writes only while the row is still in one of the statuses the change starts from."""
    return (
        update(table)
        .where(table.c.status.in_(change.source_values))
        .values(status=change.target.value)
    )


def _build(row: Row[Any]) -> LayerBuild:
    return LayerBuild(
        key=row.key,
        runtime_id=row.runtime_id,
        requirements=row.requirements,
        status=F.read(row.status),
        message=row.message,
        layer_id=row.layer_id,
        owner=row.owner,
        lease_until=row.lease_until,
        attempts=row.attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _layer(row: Row[Any]) -> Layer:
    return Layer(
        id=row.id,
        target=row.target,
        dependencies=tuple(row.dependencies),
        size=row.size,
        archive_sha256=row.archive_sha256,
        archive_size=row.archive_size,
        chunks=row.chunks,
        created_at=row.created_at,
    )


def insert_absent(conn: Connection, table: Table, **values: Any) -> bool:
    """Insert a row unless one with its primary key exists (no error, on either store); True
    when inserted."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing()
    return bool(conn.execute(statement).rowcount)


def ensure_build(conn: Connection, key: str, runtime_id: str, requirements: str) -> Row[Any]:
    """The build row of `key`, made `building` when absent, locked until the transaction ends
    (PostgreSQL; SQLite has one writer) and marked as just asked for (`updated_at`): a build
    that finishes meanwhile waits for this transaction, and then sees what it wrote; one that
    nothing used a moment ago is not dropped under it (`drop_unused`)."""
    now = utcnow()
    insert_absent(
        conn,
        layer_builds,
        key=key,
        runtime_id=runtime_id,
        requirements=requirements,
        status=F.BUILDING.value,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    touch = (
        update(layer_builds)
        .where(layer_builds.c.key == key)
        .values(updated_at=now)
        .returning(*layer_builds.c)
    )
    row: Row[Any] = conn.execute(touch).one()
    return row


class _Upload(enum.Enum):
    OURS = "ours"  # this save writes the chunks
    DONE = "done"  # the layer is stored already
    BUSY = "busy"  # another builder is storing it right now


class LayerRepository:
    def __init__(self, db: Database, *, poll_interval: float = 1.0) -> None:
        self.db = db
        #: How often a save waits to see whether another builder has stored the same layer.
        self.poll_interval = poll_interval

    # --- builds ----------------------------------------------------------------------------

    async def request_build(self, key: str, runtime_id: str, requirements: str) -> LayerBuild:
        """The build of `key`, made `building` when absent; one in `error` is a new request's
        retry: `building` again, with no owner and no message."""
        retry = (
            _moving(layer_builds, _RETRY)
            .where(layer_builds.c.key == key)
            .values(owner=None, lease_until=None, message=None, updated_at=utcnow())
        )

        def write(conn: Connection) -> LayerBuild:
            conn.execute(retry)
            return _build(ensure_build(conn, key, runtime_id, requirements))

        return await self.db.write(write)

    async def find_build(self, key: str) -> LayerBuild | None:
        query = select(layer_builds).where(layer_builds.c.key == key)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return _build(row) if row else None

    async def claim_build(self, node_id: str, lease: float) -> LayerBuild | None:
        """Take the oldest `building` build that no node holds (none ever did, or its lease
        lapsed) for `lease` seconds; None when there is none."""
        now = utcnow()
        builds = layer_builds.c
        free = or_(builds.owner.is_(None), builds.lease_until < now)
        oldest = (
            select(builds.key)
            .where(builds.status.in_(_CLAIMABLE), free)
            .order_by(builds.created_at, builds.key)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(layer_builds)
            .where(builds.key == oldest, builds.status.in_(_CLAIMABLE), free)
            .values(
                owner=node_id,
                lease_until=now + timedelta(seconds=lease),
                attempts=builds.attempts + 1,
                updated_at=now,
            )
            .returning(*builds)
        )
        row = await self.db.write(lambda conn: conn.execute(statement).first())
        return _build(row) if row else None

    async def renew_build(self, key: str, node_id: str, lease: float) -> bool:
        """Extend this node's hold on a build; False when it no longer holds it."""
        now = utcnow()
        statement = (
            update(layer_builds)
            .where(self._held(key, node_id))
            .values(lease_until=now + timedelta(seconds=lease), updated_at=now)
        )
        return await self.db.write(lambda conn: bool(conn.execute(statement).rowcount))

    async def finish_build(self, key: str, node_id: str, layer_id: str) -> bool:
        """The build is done: it and every function waiting on it are `available` with the
        layer (stored before: `save_layer`). False, and nothing written, when this node no
        longer holds the build (another took it over, or it was rebuilt or dropped)."""
        stored = select(layers.c.id).where(layers.c.id == layer_id, layers.c.complete.is_(True))

        def check(conn: Connection) -> None:
            if conn.execute(stored.with_for_update(read=True)).first() is None:
                raise NotFound(f"layer {layer_id} is not stored: save it before finishing")

        return await self._move(
            _FINISH,
            self._held(key, node_id),
            {"layer_id": layer_id, "message": None, "lease_until": None},
            {"layer_id": layer_id, "status_message": None},
            check=check,
        )

    async def fail_build(self, key: str, node_id: str, message: str) -> bool:
        """The build failed: it and every function waiting on it are `error` with `message`.
        False, and nothing written, when this node no longer holds the build."""
        return await self._move(
            _FAIL,
            self._held(key, node_id),
            {"message": message, "lease_until": None},
            {"status_message": message},
        )

    async def rebuild(self, key: str) -> bool:
        """Resolve an ended build again (its requirements may now resolve otherwise): it and its
        functions are `building`; the functions keep their layer meanwhile. False when the
        build is missing or is building already."""
        return await self._move(
            _REBUILD,
            layer_builds.c.key == key,
            {"owner": None, "lease_until": None, "message": None},
            {"status_message": None},
        )

    async def _move(
        self,
        change: Transition[FunctionStatus],
        build: Any,
        build_values: dict[str, Any],
        function_values: dict[str, Any],
        *,
        check: Callable[[Connection], None] | None = None,
    ) -> bool:
        """Move the build `build` selects, then the functions waiting on it, by `change`, in one
        transaction, `check` in between; False, and nothing written, when the build is not
        there in one of the statuses `change` starts from. (Rows are locked in the order
        `drop_unused` locks them too: the build, then the layer, then the functions.)"""
        now = utcnow()
        moving = _moving(layer_builds, change).where(build).values(**build_values, updated_at=now)
        waiting = _moving(functions, change).values(**function_values, updated_at=now)

        def write(conn: Connection) -> bool:
            key = conn.execute(moving.returning(layer_builds.c.key)).scalar()
            if key is None:
                return False
            if check is not None:  # raising rolls the build's change back
                check(conn)
            conn.execute(waiting.where(functions.c.build_key == key))
            return True

        return await self.db.write(write)

    @staticmethod
    def _held(key: str, node_id: str) -> Any:
        """The build `key` while `node_id` holds it (and it is still building)."""
        builds = layer_builds.c
        return and_(builds.key == key, builds.owner == node_id, builds.status == F.BUILDING.value)

    # --- layers ----------------------------------------------------------------------------

    async def find_layer(self, layer_id: str) -> Layer | None:
        """A stored layer (an upload in progress is not one yet)."""
        query = select(layers).where(layers.c.id == layer_id, layers.c.complete.is_(True))
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return _layer(row) if row else None

    async def save_layer(self, layer: Layer, chunks: AsyncIterator[bytes]) -> None:
        """Store a layer's archive from `chunks`, one statement per chunk, then mark it
        complete. A layer stored already is not stored again (its chunks are not read); an
        upload a dead builder left is replaced; while another builder is storing the same
        layer (two builds resolved to one set), this waits for it to finish."""
        started = utcnow()
        while (upload := await self.db.write(functools.partial(_begin, layer, started))) is (
            _Upload.BUSY
        ):
            await asyncio.sleep(self.poll_interval)
            started = utcnow()
        if upload is _Upload.DONE:
            return
        try:
            count, size = 0, 0
            async for chunk in chunks:
                await self.db.write(functools.partial(_put_chunk, layer.id, started, count, chunk))
                count, size = count + 1, size + len(chunk)
            if size != layer.archive_size:
                raise LayerBuildFailed(
                    f"layer {layer.id}: {size} bytes were stored, the archive has "
                    f"{layer.archive_size}"
                )
            await self.db.write(functools.partial(_complete, layer.id, started, count))
        except BaseException:
            try:
                await asyncio.shield(self.db.write(functools.partial(_abandon, layer.id, started)))
            except Exception:  # the store is unreachable: a later save replaces it
                log.warning("could not remove the unfinished upload of layer %s", layer.id)
            raise

    async def chunks(self, layer_id: str) -> AsyncIterator[bytes]:
        """A stored layer's archive, chunk by chunk in order, one query each. `NotFound` when
        the layer is not stored (or is dropped while being read)."""
        layer = await self.find_layer(layer_id)
        if layer is None:
            raise NotFound(f"layer {layer_id} not found")
        for seq in range(layer.chunks):
            data = await self.db.read(functools.partial(_chunk, layer_id, seq))
            if data is None:
                raise NotFound(f"layer {layer_id} not found")
            yield bytes(data)

    async def layer_ids(self) -> set[str]:
        """The ids of the layers stored (a node keeps only these in its cache)."""
        query = select(layers.c.id)
        return set(await self.db.read(lambda conn: conn.execute(query).scalars().all()))

    async def drop_unused(self, *, grace: timedelta = UPLOAD_GRACE) -> list[str]:
        """Drop the builds no function uses, then the layers (with their chunks) no build,
        function or version uses; returns the ids of the layers dropped. What was asked for or
        stored less than `grace` ago stays: a build requested for a function about to be saved,
        a layer about to finish its build."""
        builds, fns, versions = layer_builds.c, functions.c, function_versions.c
        before = utcnow() - grace
        unused_builds = delete(layer_builds).where(
            builds.updated_at < before, ~exists().where(fns.build_key == builds.key)
        )
        unused = select(layers.c.id).where(
            layers.c.created_at < before,
            ~exists().where(builds.layer_id == layers.c.id),
            ~exists().where(fns.layer_id == layers.c.id),
            ~exists().where(versions.layer_id == layers.c.id),
        )

        def write(conn: Connection) -> list[str]:
            conn.execute(unused_builds)
            ids = sorted(conn.execute(unused.with_for_update()).scalars())
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                conn.execute(delete(layer_chunks).where(layer_chunks.c.layer_id.in_(batch)))
                conn.execute(delete(layers).where(layers.c.id.in_(batch)))
            return ids

        return await self.db.write(write)


_CHUNK = select(layer_chunks.c.data).where(
    layer_chunks.c.layer_id == bindparam("layer_id"), layer_chunks.c.seq == bindparam("seq")
)


def _chunk(layer_id: str, seq: int, conn: Connection) -> Any:
    return conn.execute(_CHUNK, {"layer_id": layer_id, "seq": seq}).scalar()


def _begin(layer: Layer, started: datetime, conn: Connection) -> _Upload:
    """Start storing `layer` as the upload of `started` (its row's `created_at` tells this
    upload's writes from another's), unless it is stored or being stored."""
    query = select(layers.c.complete, layers.c.created_at).where(layers.c.id == layer.id)
    row = conn.execute(query.with_for_update()).first()
    if row is not None:
        if row.complete:
            return _Upload.DONE
        if row.created_at >= started - UPLOAD_GRACE:
            return _Upload.BUSY
        log.warning("replacing layer %s, whose upload was left unfinished", layer.id)
        conn.execute(delete(layer_chunks).where(layer_chunks.c.layer_id == layer.id))
        conn.execute(delete(layers).where(layers.c.id == layer.id))
    inserted = insert_absent(
        conn,
        layers,
        id=layer.id,
        target=layer.target,
        dependencies=list(layer.dependencies),
        size=layer.size,
        archive_sha256=layer.archive_sha256,
        archive_size=layer.archive_size,
        chunks=layer.chunks,
        complete=False,
        created_at=started,
    )
    return _Upload.OURS if inserted else _Upload.BUSY


def _upload(layer_id: str, started: datetime) -> Any:
    """The row of the upload of `started`, while it is incomplete."""
    return and_(
        layers.c.id == layer_id, layers.c.created_at == started, layers.c.complete.is_(False)
    )


def _taken_over(layer_id: str) -> LayerBuildFailed:
    return LayerBuildFailed(f"storing layer {layer_id} took so long that another node took it over")


def _put_chunk(layer_id: str, started: datetime, seq: int, data: bytes, conn: Connection) -> None:
    """Write one chunk, while the upload is still this one (locked against a takeover)."""
    mine = select(layers.c.id).where(_upload(layer_id, started)).with_for_update(read=True)
    if conn.execute(mine).first() is None:
        raise _taken_over(layer_id)
    conn.execute(layer_chunks.insert().values(layer_id=layer_id, seq=seq, data=data))


def _complete(layer_id: str, started: datetime, count: int, conn: Connection) -> None:
    statement = update(layers).where(_upload(layer_id, started)).values(complete=True, chunks=count)
    if not conn.execute(statement).rowcount:
        raise _taken_over(layer_id)


def _abandon(layer_id: str, started: datetime, conn: Connection) -> None:
    """Remove what a failed upload wrote (only if no other upload replaced it)."""
    mine = select(layers.c.id).where(_upload(layer_id, started)).with_for_update()
    if conn.execute(mine).first() is not None:
        conn.execute(delete(layer_chunks).where(layer_chunks.c.layer_id == layer_id))
        conn.execute(delete(layers).where(_upload(layer_id, started)))
