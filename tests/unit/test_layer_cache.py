"""A node's layer cache: fetched once, checked, extracted, adopted after a build, pruned."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from spinlet.domain import Layer
from spinlet.errors import RuntimeBackendError, StoreUnavailable
from spinlet.layers.archive import pack, read_chunks
from spinlet.layers.cache import LayerCache


class Store:
    """The store's side of a fetch: a layer's archive in chunks, counting the fetches."""

    def __init__(self, archive: Path, *, held: bool = False) -> None:
        self.archive = archive
        self.fetches = 0
        self.started = asyncio.Event()
        self.released = asyncio.Event()
        if not held:
            self.released.set()

    def chunks(self) -> Callable[[], AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            self.fetches += 1
            self.started.set()
            await self.released.wait()
            for chunk in await asyncio.to_thread(lambda: list(read_chunks(self.archive))):
                yield chunk

        return chunks


def built(directory: Path) -> Path:
    (directory / "pkg").mkdir(parents=True)
    (directory / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (directory / "pkg" / "fast.so").write_bytes(b"\x7fELF")
    (directory / "pkg" / "fast.so").chmod(0o700)
    return directory


async def packed(tmp_path: Path, layer_id: str = "a" * 64) -> tuple[Layer, Path]:
    archive = tmp_path / f"{layer_id}.tar.gz"
    sha256, size = await asyncio.to_thread(pack, built(tmp_path / f"built-{layer_id}"), archive)
    layer = Layer(
        id=layer_id,
        target="cp311-cp311-manylinux_2_36_x86_64",
        dependencies=("pkg==1.0",),
        size=8192,
        archive_sha256=sha256,
        archive_size=size,
        chunks=1,
    )
    return layer, archive


async def test_a_missing_layer_is_fetched_and_extracted(tmp_path: Path) -> None:
    layer, archive = await packed(tmp_path)
    store = Store(archive)
    cache = LayerCache(tmp_path / "layers")

    directory = await cache.path(layer, store.chunks())

    assert directory == tmp_path / "layers" / layer.id
    assert (directory / "pkg" / "__init__.py").read_text() == "VALUE = 1\n"
    assert (directory / "pkg" / "fast.so").stat().st_mode & 0o777 == 0o755
    assert await cache.path(layer, store.chunks()) == directory
    assert store.fetches == 1
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == [layer.id]


async def test_concurrent_requests_for_a_layer_fetch_it_once(tmp_path: Path) -> None:
    layer, archive = await packed(tmp_path)
    store = Store(archive, held=True)
    cache = LayerCache(tmp_path / "layers")

    waiting = [asyncio.create_task(cache.path(layer, store.chunks())) for _ in range(5)]
    await store.started.wait()  # the first request is fetching, the others wait for it
    store.released.set()

    assert set(await asyncio.gather(*waiting)) == {tmp_path / "layers" / layer.id}
    assert store.fetches == 1


@pytest.mark.parametrize("damage", ["sha256", "size"])
async def test_an_archive_that_is_not_the_stored_one_is_refused(
    tmp_path: Path, damage: str
) -> None:
    layer, archive = await packed(tmp_path)
    if damage == "sha256":
        layer = Layer(**{**layer.__dict__, "archive_sha256": hashlib.sha256(b"x").hexdigest()})
    else:
        layer = Layer(**{**layer.__dict__, "archive_size": layer.archive_size + 1})
    cache = LayerCache(tmp_path / "layers")

    with pytest.raises(RuntimeBackendError, match="is not the stored one"):
        await cache.path(layer, Store(archive).chunks())

    assert list((tmp_path / "layers").iterdir()) == []  # no layer, no scratch left


async def test_a_fetch_that_fails_leaves_nothing_and_the_next_one_works(tmp_path: Path) -> None:
    layer, archive = await packed(tmp_path)
    cache = LayerCache(tmp_path / "layers")

    async def broken() -> AsyncIterator[bytes]:
        yield b"\x1f\x8b"
        raise StoreUnavailable()

    with pytest.raises(StoreUnavailable):
        await cache.path(layer, broken)
    assert list((tmp_path / "layers").iterdir()) == []
    assert (await cache.path(layer, Store(archive).chunks())).is_dir()


async def test_a_built_layer_is_adopted_without_a_fetch(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "layers")
    layer, archive = await packed(tmp_path)
    store = Store(archive)

    directory = await cache.adopt(layer.id, built(tmp_path / "site"))

    assert directory == tmp_path / "layers" / layer.id
    assert not (tmp_path / "site").exists()
    assert (directory / "pkg" / "fast.so").stat().st_mode & 0o777 == 0o755
    assert await cache.path(layer, store.chunks()) == directory
    assert store.fetches == 0
    # Built twice (two nodes on one root): the first copy stays, the second is dropped.
    assert await cache.adopt(layer.id, built(tmp_path / "again")) == directory
    assert not (tmp_path / "again").exists()


async def test_prune_removes_the_layers_not_kept(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "layers")
    kept, kept_archive = await packed(tmp_path, "a" * 64)
    dropped, _ = await packed(tmp_path, "b" * 64)
    await cache.path(kept, Store(kept_archive).chunks())
    await cache.adopt(dropped.id, built(tmp_path / "site"))

    await cache.prune(keep={kept.id})

    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == [kept.id]
    await cache.prune(keep=set())
    assert list((tmp_path / "layers").iterdir()) == []
    await LayerCache(tmp_path / "nothing").prune(keep=set())
