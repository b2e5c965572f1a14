"""Work too large for the event loop: encoding, decoding or parsing a big body."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

#: Bodies larger than this are encoded, decoded or parsed in a thread: parsing a 60 MiB JSON
#: body takes a few hundred milliseconds that every other request would wait.
INLINE_LIMIT = 256 * 1024

_T = TypeVar("_T")
_R = TypeVar("_R")


async def off_loop_if_big(func: Callable[[_T], _R], arg: _T, size: int) -> _R:
    """`func(arg)`, in a thread when `size` (the bytes it works on) is over `INLINE_LIMIT`."""
    if size <= INLINE_LIMIT:
        return func(arg)
    return await asyncio.to_thread(func, arg)
