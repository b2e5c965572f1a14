"""Live logs: what a follower receives, and the memory a slow one may hold."""

from __future__ import annotations

import contextlib

from spinlet.livelogs import FOLLOWER_MEMORY, Chunk, LiveLogs, log_after
from spinlet.logcap import TRUNCATION_MARKER, cap_logs
from spinlet.logspool import LogSpool


async def test_a_follower_gets_the_snapshot_then_each_write_with_its_stream_and_time() -> None:
    logs = LiveLogs()
    with LogSpool(1024) as spool, contextlib.ExitStack() as following:
        with logs.open("e1", spool) as sink:
            sink.write("stdout", "before\n", 1.0)
            followed = following.enter_context(logs.follow("e1"))
            assert followed is not None
            snapshot, follower = followed
            assert snapshot == Chunk(0, b"before\n")
            sink.write("stderr", "after\n", 2.0)
            assert await follower.take() == [Chunk(7, b"after\n", "stderr", 2.0)]
            assert sink.text() == "before\nafter\n"
        assert follower.ended and await follower.take() == []  # the execution ended
    with logs.follow("e1") as gone:
        assert gone is None  # ended: no longer live on this node


async def test_a_slow_follower_is_dropped_and_its_memory_freed() -> None:
    logs = LiveLogs()
    line = "x" * 1023 + "\n"
    with (
        LogSpool(8 * FOLLOWER_MEMORY) as spool,
        logs.open("e1", spool) as sink,
        logs.follow("e1") as slow_followed,
        logs.follow("e1") as fast_followed,
    ):
        assert slow_followed is not None and fast_followed is not None
        slow, fast = slow_followed[1], fast_followed[1]
        most = 0
        for _ in range(4 * FOLLOWER_MEMORY // len(line)):  # 4 times what it may hold
            sink.write("stdout", line, 1.0)
            most = max(most, slow.held)
            assert sum(len(c.data) for c in await fast.take()) == len(line)
        assert slow.dropped and not fast.dropped
        assert most <= FOLLOWER_MEMORY and slow.held == 0
        assert await slow.take() == []  # its response ends
    assert spool.size == 4 * FOLLOWER_MEMORY  # the log itself lost nothing (capped as ever)


def test_a_resume_gets_only_the_bytes_past_its_offset_and_a_marker_for_those_dropped() -> None:
    assert log_after("abc\ndef\n", 4) == Chunk(4, b"def\n")
    assert log_after("abc\ndef\n", 8) == Chunk(8, b"")
    capped = cap_logs("".join(f"line {n:03}\n" for n in range(100)), 100)  # 900 bytes
    head, tail = capped.split(TRUNCATION_MARKER.format(dropped=810))
    assert head == "".join(f"line {n:03}\n" for n in range(5))
    assert tail == "".join(f"line {n:03}\n" for n in range(95, 100))
    assert log_after(capped, 0) == Chunk(900 - len(capped), capped.encode())
    assert log_after(capped, 896) == Chunk(896, b"099\n")  # in the tail: as written
    # Past the head, not yet in the tail: a marker for what this reader misses, then the tail.
    missed = log_after(capped, 100)
    marker = TRUNCATION_MARKER.format(dropped=900 - len(tail) - 100)
    assert missed.data.decode() == marker + tail and missed.end == 900


async def test_past_the_log_cap_a_follower_gets_nothing_live() -> None:
    logs = LiveLogs()
    with LogSpool(100) as spool, logs.open("e1", spool) as sink, logs.follow("e1") as followed:
        assert followed is not None
        for n in range(100):
            sink.write("stdout", f"line {n:03}\n", float(n))
        live = b"".join(chunk.data for chunk in await followed[1].take())
        written = "".join(f"line {n:03}\n" for n in range(100)).encode()
        assert live == written[:100]  # the cap
