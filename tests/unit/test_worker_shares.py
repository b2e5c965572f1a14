"""How the live nodes split a function's provisioned containers: each computes its own share,
and together they hold the count, never twice it."""

from __future__ import annotations

import pytest

from spinlet.services.workers import share

NODES = ["a", "b", "c"]


def shares(count: int, nodes: list[str], short: dict[str, int] | None = None) -> list[int]:
    return [share(count, nodes, node, short or {}) for node in nodes]


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 7, 100])
def test_the_shares_add_up_to_the_count(count: int) -> None:
    split = shares(count, NODES)
    assert sum(split) == count
    assert max(split) - min(split) <= 1  # as even as it gets


def test_the_first_nodes_take_the_remainder() -> None:
    assert shares(4, NODES) == [2, 1, 1]
    assert shares(1, NODES) == [1, 0, 0]


def test_one_node_keeps_the_whole_count() -> None:
    assert share(5, ["only"], "only", {}) == 5


def test_a_node_that_is_not_live_keeps_none() -> None:
    assert share(5, NODES, "gone", {}) == 0


def test_the_others_take_over_what_a_full_node_lacks() -> None:
    # c could start none of its 2: a and b split them (a, the first, takes the odd one)
    assert shares(6, NODES, {"c": 2}) == [3, 3, 2]
    assert shares(5, NODES, {"a": 2}) == [2, 3, 2]
    # c keeps asking for its own share: once it has room, the others give theirs back
    assert shares(6, NODES, {}) == [2, 2, 2]


def test_nodes_short_themselves_take_none_of_the_others_shortfall() -> None:
    assert shares(6, NODES, {"b": 1, "c": 2}) == [5, 2, 2]
    everyone_full = {"a": 1, "b": 1, "c": 1}
    assert shares(3, NODES, everyone_full) == [1, 1, 1]
