"""The concurrency gates (per function, per project): limits, a bounded line, hand-over,
refusals."""

from __future__ import annotations

import asyncio

import pytest

from spinlet.errors import TooManyRequests
from spinlet.services.concurrency import ConcurrencyGate, ExecutionGates


async def test_within_the_limit_nobody_waits() -> None:
    gate = ConcurrencyGate()
    await gate.acquire("f", 2)
    await gate.acquire("f", 2)
    assert gate.running("f") == 2 and gate.saturated() == {"f"}
    gate.release("f")
    assert gate.saturated() == set()


async def test_beyond_the_limit_executions_wait_in_line_in_order() -> None:
    gate = ConcurrencyGate(max_wait=5)
    order: list[int] = []

    async def one(i: int) -> None:
        async with gate.slot("f", 1):
            order.append(i)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(one(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert gate.running("f") == 0


async def test_a_full_line_or_a_long_wait_is_refused_with_retry_after() -> None:
    gate = ConcurrencyGate(max_waiting=1, max_wait=0.1)
    await gate.acquire("f", 1)
    waiter = asyncio.create_task(gate.acquire("f", 1))
    await asyncio.sleep(0)
    with pytest.raises(TooManyRequests) as refused:
        await gate.acquire("f", 1)
    assert refused.value.details["retry_after"] == 1 and refused.value.status == 429
    with pytest.raises(TooManyRequests):
        await waiter  # waited past max_wait
    with pytest.raises(TooManyRequests):
        await gate.acquire("f", 1, wait=False)
    assert gate.running("f") == 1


async def test_functions_do_not_share_slots() -> None:
    gate = ConcurrencyGate()
    await gate.acquire("a", 1)
    await gate.acquire("b", 1)
    assert gate.saturated() == {"a", "b"}


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    gate = ConcurrencyGate(max_wait=5)
    await gate.acquire("f", 1)
    waiter = asyncio.create_task(gate.acquire("f", 1))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release("f")
    assert gate.running("f") == 0
    await gate.acquire("f", 1, wait=False)


async def test_a_project_quota_spans_its_functions_and_spares_other_projects() -> None:
    gates = ExecutionGates(quota=2, max_wait=0.1)
    await gates.acquire("acme", "f", 10)
    await gates.acquire("acme", "g", 10)
    assert gates.saturated() == (set(), {"acme"})
    with pytest.raises(TooManyRequests, match="project acme"):
        await gates.acquire("acme", "h", 10)  # another function: the project's quota is spent
    await gates.acquire("other", "h", 10)  # another project is not held up
    waiting = asyncio.create_task(gates.acquire("acme", "h", 10, bounded=False))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # an async execution waits, however long
    gates.release("acme", "f")
    await waiting
    assert gates.projects.running("acme") == 2 and gates.functions.running("f") == 0
    # A function at its own limit gives the project's slot back.
    fresh = ExecutionGates(quota=5, max_wait=0.05)
    with pytest.raises(TooManyRequests, match="function g"):
        await fresh.acquire("x", "g", 0)
    assert fresh.projects.running("x") == 0
