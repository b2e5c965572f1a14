"""A node's extracted layers: each layer fetched from the store once, kept as a directory.

Layout under `root` (`<code root>/layers`, the filesystem of the sandboxes' directories, so that
`CodeDirs` can hard-link a layer's files into a sandbox and every sandbox shares one copy in the
page cache):

- `<layer id>/`: an extracted layer, never changed once there;
- `.fetch-<layer id>-<random>/`: a fetch in progress (the archive, then its extraction), renamed
  into place when complete, so a layer directory is either whole or absent. Another process
  doing the same at once is fine: the first rename wins and the other copy is dropped.

A fetch streams the store's chunks to a file (never the whole archive in memory) and checks its
sha256 and size against the layer's record before unpacking anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import BinaryIO

from spinlet.domain import Layer
from spinlet.errors import RuntimeBackendError
from spinlet.layers.archive import unpack

#: The prefix of a fetch in progress.
FETCHING = ".fetch-"
#: A fetch directory older than this is a crashed node's: `prune` removes it.
SCRATCH_MAX_AGE = 3600.0
_ARCHIVE = "layer.tar"


class LayerCache:
    """The extracted layers of one node under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._locks: dict[str, asyncio.Lock] = {}

    async def path(self, layer: Layer, chunks: Callable[[], AsyncIterator[bytes]]) -> Path:
        """The directory of `layer`, fetched with `chunks` and extracted when this node does not
        have it yet (one fetch of a layer at a time); `RuntimeBackendError` when the fetched
        archive is not the one the store describes or cannot be unpacked."""
        destination = self.root / layer.id
        lock = self._locks.setdefault(layer.id, asyncio.Lock())
        async with lock:
            if await asyncio.to_thread(destination.is_dir):
                return destination
            scratch = Path(await asyncio.to_thread(self._scratch, layer.id))
            try:
                await self._fetch(layer, chunks, scratch / _ARCHIVE)
                extracted = scratch / "layer"
                await asyncio.to_thread(unpack, scratch / _ARCHIVE, extracted)
                await asyncio.to_thread(_place, extracted, destination)
            except OSError as exc:
                raise RuntimeBackendError(f"cannot fetch layer {layer.id}: {exc}") from exc
            finally:
                await asyncio.to_thread(shutil.rmtree, scratch, True)
        return destination

    async def adopt(self, layer_id: str, directory: Path) -> Path:
        """Move a layer this node has just built (`directory`, on the same filesystem) into the
        cache without fetching it; its modes are made the ones an unpacked archive has."""
        destination = self.root / layer_id
        async with self._locks.setdefault(layer_id, asyncio.Lock()):
            await asyncio.to_thread(self._adopt, directory, destination)
        return destination

    async def prune(self, keep: Collection[str]) -> None:
        """Remove the cached layers whose ids are not in `keep` (and crashed fetches).

        Sandboxes that hard-linked a removed layer's files keep their links."""
        busy = {layer_id for layer_id, lock in self._locks.items() if lock.locked()}
        await asyncio.to_thread(self._prune, set(keep) | busy)
        self._locks = {k: lock for k, lock in self._locks.items() if k in keep or lock.locked()}

    async def _fetch(
        self, layer: Layer, chunks: Callable[[], AsyncIterator[bytes]], archive: Path
    ) -> None:
        digest = hashlib.sha256()
        size = 0
        file = await asyncio.to_thread(archive.open, "wb")
        try:
            async for chunk in chunks():
                await asyncio.to_thread(_write, file, digest, chunk)
                size += len(chunk)
        finally:
            await asyncio.to_thread(file.close)
        if (digest.hexdigest(), size) != (layer.archive_sha256, layer.archive_size):
            raise RuntimeBackendError(
                f"layer {layer.id}: the fetched archive ({size} bytes, sha256 "
                f"{digest.hexdigest()}) is not the stored one ({layer.archive_size} bytes, "
                f"sha256 {layer.archive_sha256})"
            )

    def _scratch(self, layer_id: str) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{FETCHING}{layer_id}-", dir=self.root)

    def _adopt(self, directory: Path, destination: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for root, _, files in os.walk(directory):
            os.chmod(root, 0o755)
            for name in files:
                path = os.path.join(root, name)
                os.chmod(path, 0o755 if os.lstat(path).st_mode & 0o111 else 0o644)
        _place(directory, destination)

    def _prune(self, keep: set[str]) -> None:
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.name.startswith(FETCHING):
                layer_id = entry.name[len(FETCHING) :].split("-", 1)[0]
                if layer_id in keep or time.time() - entry.stat().st_mtime < SCRATCH_MAX_AGE:
                    continue
            elif entry.name in keep:
                continue
            shutil.rmtree(entry, ignore_errors=True)


def _write(file: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    digest.update(chunk)
    file.write(chunk)


def _place(directory: Path, destination: Path) -> None:
    """Rename `directory` to `destination`; when another process put it there first, drop
    ours (a layer's content is fixed by its id, so either copy is the same)."""
    try:
        os.rename(directory, destination)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise RuntimeBackendError(f"cannot keep layer {destination.name}: {exc}") from exc
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
