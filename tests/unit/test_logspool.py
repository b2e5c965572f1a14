"""A running execution's log spool: small fixed memory, then a file bounded by the log cap, and
the same final log as capping the whole output at once (head, one marker, tail)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spinlet.logcap import cap_logs
from spinlet.logspool import LogSpool

MARKER = re.compile(r"\n\[spinlet: log truncated, (\d+) bytes dropped\]\n")


def spool(limit: int, memory: int, tmp_path: Path) -> LogSpool:
    return LogSpool(limit, memory=memory, directory=tmp_path)


def test_a_short_log_stays_in_memory_and_whole(tmp_path: Path) -> None:
    with spool(1024, 256, tmp_path) as log:
        log.write("stdout", "hello\n", 1.0)
        log.write("stderr", "oops ✓\n", 2.0)
        assert log.text() == "hello\noops ✓\n"
        assert not log.spooled and log.disk_bytes == 0
        assert log.memory_bytes == len("hello\noops ✓\n".encode())


def test_memory_holds_at_most_its_amount_then_the_rest_is_spooled(tmp_path: Path) -> None:
    lines = [f"line {i:04}\n" for i in range(500)]  # 5,500 bytes
    with spool(64 * 1024, 1024, tmp_path) as log:
        for line in lines:
            log.write("stdout", line, 0.0)
            assert log.memory_bytes <= 1024
        assert log.spooled and log.text() == "".join(lines)


def test_a_long_log_keeps_head_and_tail_with_one_marker(tmp_path: Path) -> None:
    lines = [f"{i}: {'x' * 40}\n" for i in range(2000)]
    whole = "".join(lines)
    with spool(4096, 512, tmp_path) as log:
        for line in lines:
            log.write("stdout", line, 0.0)
        text = log.text()
    assert text.startswith(lines[0]) and text.endswith(lines[-1])
    [dropped] = MARKER.findall(text)
    assert len(MARKER.sub("", text).encode()) + int(dropped) == len(whole.encode())
    assert text == cap_logs(whole, 4096)


def test_a_flood_of_many_mebibytes_keeps_memory_and_disk_bounded(tmp_path: Path) -> None:
    limit, memory = 256 * 1024, 16 * 1024
    line = "flooding " * 100 + "\n"
    count = 40 * 1024 * 1024 // len(line)  # 40 MiB
    with spool(limit, memory, tmp_path) as log:
        for i in range(count):
            log.write("stdout", line, 0.0)
            if i % 4096 == 0:
                assert log.memory_bytes <= memory and log.disk_bytes <= limit + 1
        log.write("stderr", "the end\n", 0.0)
        assert log.disk_bytes <= limit + 1
        assert log.size == count * len(line) + len("the end\n")
        text = log.text()
    assert text.startswith(line) and text.endswith(line + "the end\n")
    [dropped] = MARKER.findall(text)
    assert len(MARKER.sub("", text).encode()) + int(dropped) == count * len(line) + 8


def test_one_write_larger_than_everything_is_capped_alike(tmp_path: Path) -> None:
    whole = "".join(f"{i} ✓ é\n" for i in range(100_000))
    with spool(10_000, 1000, tmp_path) as log:
        log.write("stdout", whole, 0.0)
        assert log.memory_bytes == 0 and log.disk_bytes <= 10_001
        assert log.text() == cap_logs(whole, 10_000)


def test_multibyte_text_is_not_cut_inside_a_character(tmp_path: Path) -> None:
    with spool(1001, 100, tmp_path) as log:
        for _ in range(3000):
            log.write("stdout", "✓😀", 0.0)  # no line ends at all
        text = log.text()
    assert "\ufffd" not in text
    assert len(MARKER.findall(text)) == 1
    assert MARKER.sub("", text).strip("✓😀") == ""


def test_nul_characters_become_replacement_characters(tmp_path: Path) -> None:
    with spool(1024, 64, tmp_path) as log:
        log.write("stdout", "a\x00b\n", 0.0)
        assert log.text() == "a\ufffdb\n"


def test_after_close_it_holds_nothing_and_keeps_its_last_text(tmp_path: Path) -> None:
    log = spool(1024, 16, tmp_path)
    log.write("stdout", "spooled to its file\n", 0.0)
    assert log.spooled
    text = log.text()
    log.close()
    assert not log.spooled and log.memory_bytes == 0
    assert log.text() == text
    with pytest.raises(ValueError):
        log.write("stdout", "late\n", 0.0)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.text(alphabet=st.sampled_from("ab\n✓😀é"), max_size=300), max_size=60),
    limit=st.integers(min_value=8, max_value=2000),
    memory=st.integers(min_value=1, max_value=600),
)
def test_the_spooled_log_is_the_whole_log_capped(
    pieces: list[str], limit: int, memory: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with LogSpool(limit, memory=memory, directory=tmp_path_factory.getbasetemp()) as log:
        for piece in pieces:
            log.write("stdout", piece, 0.0)
        assert log.memory_bytes <= memory
        assert log.disk_bytes <= limit + 1
        assert log.text() == cap_logs("".join(pieces), limit)


async def test_on_the_loop_the_file_is_written_by_a_thread_in_order(tmp_path: Path) -> None:
    """A flood written from the event loop: batches go to a thread (or, when it lags, are
    written in order on the loop); memory stays within two batches, the log is exact."""
    lines = [f"{i} {'y' * 100} ✓\n" for i in range(50_000)]
    with spool(100_000, 4096, tmp_path) as log:
        for i, line in enumerate(lines):
            log.write("stdout", line, 0.0)
            assert log.memory_bytes <= 2 * (4096 + len(line))
            if i % 1000 == 0:
                await asyncio.sleep(0)  # let the writer thread's result in
        text = await asyncio.to_thread(log.text)
    assert text == cap_logs("".join(lines), 100_000)
