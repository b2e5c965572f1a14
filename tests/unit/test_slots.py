"""The pool's books: room under both caps, which sandboxes to evict, counts by state."""

from __future__ import annotations

import itertools
from pathlib import Path

from spinlet.runtime.backend import FunctionSpec
from spinlet.runtime.driver import Sandbox, SandboxShape, pool_key
from spinlet.runtime.protocol import RuntimeConnection
from spinlet.runtime.slots import Slot, SlotTable

MiB = 1024 * 1024
SMALL = SandboxShape("sha256:img", 128 * MiB, 1000)
BIG = SandboxShape("sha256:img", 512 * MiB, 1000)
_ids = itertools.count()


def make_slot(shape: SandboxShape, *, function: str | None = None) -> Slot:
    n = next(_ids)
    sandbox = Sandbox(f"id{n}", f"sb{n}", Path(f"/tmp/sb{n}.sock"), shape.image_id)
    slot = Slot(sandbox, shape, RuntimeConnection(sandbox.socket_path), "runtime:1")
    if function is not None:
        spec = FunctionSpec(function, function, 1, "hash", "runtime:1")
        slot.assign(spec, pool_key(spec))
    return slot


def idle(table: SlotTable, shape: SandboxShape, function: str) -> Slot:
    slot = make_slot(shape, function=function)
    table.add(slot)
    table.put_idle(slot)
    return slot


def stem(table: SlotTable, shape: SandboxShape) -> Slot:
    slot = make_slot(shape)
    table.add(slot)
    table.put_stem(slot)
    return slot


def test_room_counts_containers_memory_and_reservations() -> None:
    table = SlotTable(max_containers=3, max_memory=640 * MiB)
    assert table.fits(512 * MiB)
    assert not table.fits(641 * MiB)
    idle(table, SMALL, "a")
    table.reserve(128 * MiB)
    assert table.memory == 256 * MiB
    assert table.fits(384 * MiB) and not table.fits(385 * MiB)
    stem(table, SMALL)
    assert not table.fits(1)  # three containers
    table.unreserve(128 * MiB)
    assert table.fits(128 * MiB)
    assert table.stats() == {
        "starting": 0,
        "stem": 1,
        "busy": 0,
        "idle": 1,
        "containers": 2,
        "memory_bytes": 256 * MiB,
    }


def test_stem_cells_are_evicted_before_idle_ones_then_least_recently_used_first() -> None:
    table = SlotTable(max_containers=3, max_memory=None)
    older = idle(table, SMALL, "a")
    newer = idle(table, SMALL, "b")
    cell = stem(table, SMALL)
    assert table.victims(128 * MiB) == [cell]
    table.forget(cell)
    assert table.victims(128 * MiB) == []  # room already
    table.reserve(128 * MiB)
    assert table.victims(128 * MiB) == [older]
    assert newer.state == "idle"


def test_memory_evicts_as_many_as_needed_or_none() -> None:
    table = SlotTable(max_containers=10, max_memory=512 * MiB)
    first = idle(table, SMALL, "a")
    second = idle(table, SMALL, "b")
    busy = make_slot(SMALL, function="c")
    busy.state = "busy"
    table.add(busy)  # never a victim
    assert table.victims(256 * MiB) == [first]
    assert table.victims(384 * MiB) == [first, second]
    assert table.victims(512 * MiB) is None  # the busy one holds 128 MiB
    assert table.stats()["busy"] == 1


def test_stems_of_a_shape_count_reserved_places_and_taking_removes_one() -> None:
    table = SlotTable(max_containers=10, max_memory=None)
    first = stem(table, SMALL)
    stem(table, BIG)
    table.reserve(SMALL.memory_size, stem=SMALL)
    assert (table.stems(SMALL), table.stems(BIG)) == (2, 1)
    assert table.take_stem(SMALL) is first  # oldest first
    assert table.take_stem(SMALL) is None
    spec = FunctionSpec("f", "f", 1, "h", "runtime:1")
    first.assign(spec, pool_key(spec))  # now initialised for a function: no longer a stem cell
    table.unreserve(SMALL.memory_size, stem=SMALL)
    assert table.stems(SMALL) == 0
