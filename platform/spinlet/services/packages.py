"""Package blobs are shared by content hash: one goes when nothing references it any more."""

from __future__ import annotations

from spinlet.packages import PackageStore
from spinlet.store import Store


async def forget_package(store: Store, package_store: PackageStore, sha256: str) -> bool:
    """Drop a package (record and blob) no function or version uses; True when it was dropped."""
    if await store.functions.drop_package_if_unused(sha256):
        await package_store.delete(sha256)
        return True
    return False
