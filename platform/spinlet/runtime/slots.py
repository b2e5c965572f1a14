"""The books of a pool: which sandboxes it holds, in which state, and how much room is left.

Synchronous bookkeeping only (no I/O): `PoolBackend` creates and destroys sandboxes, this table
says which one serves an execution, which one to evict and whether another one fits.

A sandbox is `starting` (created, not ready or not initialised yet), a `stem` cell (started and
ready, initialised for no function yet), `busy` (running an execution) or `idle` (initialised for
one function version, waiting for its next execution). Both caps count every sandbox held plus
the places reserved for sandboxes being created: `max_containers`, and `max_memory` against the
sum of their memory limits.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from spinlet.runtime.backend import FunctionSpec
from spinlet.runtime.driver import ExitReason, PoolKey, Sandbox, SandboxShape
from spinlet.runtime.protocol import RuntimeConnection

SlotState = Literal["starting", "stem", "busy", "idle"]
STATES: tuple[SlotState, ...] = ("starting", "stem", "busy", "idle")

_K = TypeVar("_K")


@dataclass(eq=False)
class Slot:
    """One sandbox held by the pool."""

    sandbox: Sandbox
    shape: SandboxShape
    conn: RuntimeConnection
    image: str  # the image reference it was made for (shown in `containers()`)
    spec: FunctionSpec | None = None  # None while it is a stem cell (or one being made)
    key: PoolKey | None = None
    state: SlotState = "starting"
    created_at: float = field(default_factory=time.time)
    last_used_at: float = field(default_factory=time.time)
    idle_since: float = field(default_factory=time.monotonic)
    exited: ExitReason | None = None  # the driver reported it stopped
    discarded: bool = False  # the pool let go of it (closing, evicting): its end is not a crash
    destroyed: bool = False
    # Kept for its function whatever the keep-alive (provisioned concurrency): never reaped
    # nor evicted; `retiring`: no longer provisioned, destroyed once its execution ends.
    provisioned: bool = False
    retiring: bool = False

    def assign(self, spec: FunctionSpec, key: PoolKey) -> None:
        """A stem cell becomes a sandbox of `spec`, starting until /init'ed for it."""
        self.spec, self.key, self.image, self.state = spec, key, spec.image, "starting"


class SlotTable:
    """Every sandbox held, the idle ones by pool key, the stem cells by shape, and the room."""

    def __init__(self, max_containers: int, max_memory: int | None) -> None:
        self.max_containers = max_containers
        self.max_memory = max_memory
        self._slots: dict[str, Slot] = {}  # by sandbox id
        self._idle: dict[PoolKey, list[Slot]] = {}  # most recently used last
        self._stems: dict[SandboxShape, list[Slot]] = {}  # most recently made last
        self.reserved = 0  # places taken by sandboxes being created
        self.reserved_memory = 0
        self._reserved_stems: Counter[SandboxShape] = Counter()
        self._reserved_projects: Counter[str] = Counter()  # places under a project's quota

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._slots.values()))

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, sandbox_id: str) -> Slot | None:
        return self._slots.get(sandbox_id)

    def holds(self, slot: Slot) -> bool:
        return self._slots.get(slot.sandbox.id) is slot

    def add(self, slot: Slot) -> None:
        self._slots[slot.sandbox.id] = slot

    def forget(self, slot: Slot) -> None:
        """Drop a slot from the books (it is not destroyed yet)."""
        slot.discarded = True
        if self.holds(slot):
            del self._slots[slot.sandbox.id]
        if slot.key is not None:
            _remove(self._idle, slot.key, slot)
        _remove(self._stems, slot.shape, slot)

    # -- idle sandboxes and stem cells -------------------------------------------------------

    def take_idle(self, key: PoolKey) -> Slot | None:
        """The most recently used idle sandbox of `key`, now busy."""
        stack = self._idle.get(key)
        if not stack:
            return None
        slot = stack.pop()
        if not stack:
            del self._idle[key]
        slot.state = "busy"
        return slot

    def put_idle(self, slot: Slot) -> None:
        assert slot.key is not None
        slot.state = "idle"
        slot.last_used_at = time.time()
        slot.idle_since = time.monotonic()
        self._idle.setdefault(slot.key, []).append(slot)

    def take_stem(self, shape: SandboxShape) -> Slot | None:
        """The oldest ready stem cell of `shape` (still `stem`: the caller assigns it)."""
        stack = self._stems.get(shape)
        if not stack:
            return None
        slot = stack.pop(0)
        if not stack:
            del self._stems[shape]
        return slot

    def put_stem(self, slot: Slot) -> None:
        slot.state = "stem"
        slot.idle_since = time.monotonic()
        self._stems.setdefault(slot.shape, []).append(slot)

    def stems(self, shape: SandboxShape) -> int:
        """Stem cells of `shape`: ready, starting, or with a place reserved."""
        held = sum(1 for slot in self._slots.values() if slot.shape == shape and slot.spec is None)
        return held + self._reserved_stems[shape]

    def idle_slots(self) -> list[Slot]:
        return [slot for stack in self._idle.values() for slot in stack]

    def stem_slots(self) -> list[Slot]:
        return [slot for stack in self._stems.values() for slot in stack]

    # -- room --------------------------------------------------------------------------------

    @property
    def memory(self) -> int:
        """The memory limits of every sandbox held or being created, summed."""
        return self.reserved_memory + sum(slot.shape.memory_size for slot in self._slots.values())

    def fits(self, memory: int) -> bool:
        """Whether one more sandbox of `memory` bytes fits under both caps now."""
        return self._room(len(self._slots) + self.reserved, self.memory, memory)

    def _room(self, count: int, used: int, memory: int) -> bool:
        if count >= self.max_containers:
            return False
        return self.max_memory is None or used + memory <= self.max_memory

    def reserve(self, memory: int, stem: SandboxShape | None = None) -> None:
        """Take a place for a sandbox about to be created (a stem cell of `stem`)."""
        self.reserved += 1
        self.reserved_memory += memory
        if stem is not None:
            self._reserved_stems[stem] += 1

    def unreserve(self, memory: int, stem: SandboxShape | None = None) -> None:
        self.reserved -= 1
        self.reserved_memory -= memory
        if stem is not None:
            self._reserved_stems[stem] -= 1
            if self._reserved_stems[stem] <= 0:
                del self._reserved_stems[stem]

    def project_count(self, project_id: str) -> int:
        """The project's sandboxes (stem cells are no one's), with the places it reserved."""
        held = sum(
            1
            for slot in self._slots.values()
            if slot.spec is not None and slot.spec.project_id == project_id
        )
        return held + self._reserved_projects[project_id]

    def project_idle(self, project_id: str) -> list[Slot]:
        """The project's idle sandboxes, least recently used first."""
        mine = [
            s
            for s in self.idle_slots()
            if s.spec is not None and s.spec.project_id == project_id and not s.provisioned
        ]
        return sorted(mine, key=lambda slot: slot.idle_since)

    def project_reserve(self, project_id: str) -> None:
        self._reserved_projects[project_id] += 1

    def project_unreserve(self, project_id: str) -> None:
        self._reserved_projects[project_id] -= 1
        if self._reserved_projects[project_id] <= 0:
            del self._reserved_projects[project_id]

    def victims(self, memory: int) -> list[Slot] | None:
        """The sandboxes to evict so that one of `memory` bytes fits: stem cells first (oldest
        first), then idle ones (least recently used first), never provisioned ones; None when
        evicting all of them would not make room (busy and starting sandboxes must end first)."""
        candidates = sorted(self.stem_slots(), key=lambda slot: slot.idle_since)
        idle = [slot for slot in self.idle_slots() if not slot.provisioned]
        candidates += sorted(idle, key=lambda slot: slot.idle_since)
        count, used = len(self._slots) + self.reserved, self.memory
        chosen: list[Slot] = []
        for slot in candidates:
            if self._room(count, used, memory):
                break
            chosen.append(slot)
            count, used = count - 1, used - slot.shape.memory_size
        return chosen if self._room(count, used, memory) else None

    def stats(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for slot in self._slots.values():
            counts[slot.state] += 1
        counts["starting"] += self.reserved
        counts["containers"] = len(self._slots) + self.reserved
        counts["memory_bytes"] = self.memory
        return counts


def _remove(stacks: dict[_K, list[Slot]], key: _K, slot: Slot) -> None:
    stack = stacks.get(key)
    if stack is not None and slot in stack:
        stack.remove(slot)
        if not stack:
            del stacks[key]
