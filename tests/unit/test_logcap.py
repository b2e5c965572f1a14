"""The node's log cap (`spinlet.logcap`): head and tail at line boundaries, one marker, and the
same rule as the runtime's own capture."""

from __future__ import annotations

import pytest

from spinlet.logcap import cap_logs, fit_log
from tests.unit.test_runtime_server import load_server_module


def marker(dropped: int) -> str:
    return f"\n[spinlet: log truncated, {dropped} bytes dropped]\n"


def lines(numbers: range) -> str:
    return "".join(f"line {i:02}\n" for i in numbers)  # 8 bytes each


def test_a_log_within_the_cap_is_kept_whole() -> None:
    assert cap_logs("short\n", 10) == "short\n"
    assert cap_logs(lines(range(5)), 40) == lines(range(5))
    assert cap_logs("a\x00b", 10) == "a\ufffdb"  # PostgreSQL's text holds no NUL


def test_head_and_tail_are_kept_at_line_boundaries_with_one_marker() -> None:
    capped = cap_logs(lines(range(20)), 50)
    # 25 bytes a half: three whole lines each; the rest, 112 bytes, is dropped.
    assert capped == lines(range(3)) + marker(112) + lines(range(17, 20))


def test_a_single_line_longer_than_the_cap_keeps_both_ends() -> None:
    assert cap_logs("a" + "x" * 98 + "z", 10) == "axxxx" + marker(90) + "xxxxz"
    assert cap_logs("begin\n" + "x" * 100 + "\n", 10) == "begin" + marker(97) + "xxxx\n"


def test_multibyte_characters_are_not_cut() -> None:
    # "€" is 3 bytes: 5 bytes a half hold one whole character each.
    assert cap_logs("€" * 10, 10) == "€" + marker(24) + "€"
    capped = cap_logs("é" * 6, 5)
    assert capped == "é" + marker(8) + "é"


def test_the_runtimes_marker_is_merged_into_one() -> None:
    # What a runtime with a cap of 40 bytes made of 100 lines (800 bytes).
    by_runtime = lines(range(2)) + marker(768) + lines(range(98, 100))
    assert fit_log(lines(range(100)).encode(), b"", 0, 40) == by_runtime
    assert cap_logs(by_runtime, 40) == by_runtime
    # A node with a smaller cap: one marker, counting what both dropped.
    assert cap_logs(by_runtime, 20) == lines(range(1)) + marker(784) + lines(range(99, 100))


def test_a_marker_the_function_printed_stays_as_it_printed_it() -> None:
    printed = "[spinlet: log truncated, 5 bytes dropped]\n"
    within = lines(range(2)) + printed + lines(range(2))
    assert cap_logs(within, 100) == within
    # After the runtime's own marker (the first), a printed one is text of the tail.
    log = lines(range(100)) + printed + lines(range(2))
    by_runtime = lines(range(7)) + marker(744) + printed + lines(range(2))
    assert fit_log(log.encode(), b"", 0, 120) == by_runtime
    assert cap_logs(by_runtime, 120) == by_runtime


@pytest.mark.parametrize(
    ("head", "tail", "gap", "limit"),
    [
        (lines(range(100)).encode(), b"", 0, 40),
        (("é" * 50).encode(), b"", 0, 11),
        (b"x" * 20, b"yy\n" + b"z" * 30, 500, 24),
        (b"a\nb\n", b"c\nd\n", 10, 3),
        (b"", b"", 0, 0),
        (b"abc\n", b"", 0, 0),
    ],
)
def test_the_runtime_and_the_node_cap_alike(head: bytes, tail: bytes, gap: int, limit: int) -> None:
    runtime = load_server_module()
    assert runtime.fit_log(head, tail, gap, limit) == fit_log(head, tail, gap, limit)
    assert runtime.TRUNCATION_MARKER.format(dropped=7) == marker(7)
