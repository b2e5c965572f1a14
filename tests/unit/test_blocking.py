"""The `blockbuster` fixture (tests/conftest.py) is on: Spinlet's code blocking the event loop
fails the test, and the same code in a thread does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from blockbuster import BlockingError

from spinlet.packages import PackageStore

SHA = "ab" * 32


async def test_a_blocking_call_of_spinlet_code_on_the_loop_fails(tmp_path: Path) -> None:
    store = PackageStore(tmp_path)
    with pytest.raises(BlockingError):
        store._write(SHA, b"zip")  # the file write `put` does in a thread
    await asyncio.to_thread(store._write, SHA, b"zip")
    assert await store.get(SHA) == b"zip"
