"""`spinlet bench --runtime`: which runtimes a run measures, each one's echo, and the comparison
across them (no Docker: the measuring itself is tests/acceptance/test_bench.py)."""

from __future__ import annotations

import io
import zipfile

import click
import pytest

from spinlet.bench.suite import FIRST, WARM, BenchOptions, Report, across
from spinlet.bench.twins import echo_for
from spinlet.cli.bench import _runtimes
from spinlet.runtime.catalog import CATALOG, NODEJS20, PYTHON3, PYTHON313


def test_runtimes_default_named_repeated_and_all() -> None:
    assert _runtimes(()) == [PYTHON3]
    assert _runtimes(("nodejs20",)) == [NODEJS20]
    assert _runtimes(("nodejs20", "python3", "nodejs20")) == [NODEJS20, PYTHON3]
    assert _runtimes(("all",)) == list(CATALOG)
    assert _runtimes(("nodejs20", "all")) == [NODEJS20, PYTHON3, PYTHON313]
    with pytest.raises(click.BadParameter, match="'ruby3' is not a shipped runtime"):
        _runtimes(("ruby3",))


def test_each_language_has_its_echo() -> None:
    node = echo_for(NODEJS20)
    assert (node.entry, node.filename, node.python) == ("echo.main", "echo.zip", False)
    with zipfile.ZipFile(io.BytesIO(node.code)) as archive:
        assert archive.namelist() == ["echo.js"]
    assert node.naive[0] == "node"
    for runtime in (PYTHON3, PYTHON313):
        python = echo_for(runtime)
        assert (python.entry, python.filename, python.python) == ("echo.main", "echo.py", True)
        assert python.naive[0] == "python3"


def report(runtime: str, warm: float, first: float) -> Report:
    made = Report(BenchOptions(runtime=runtime))
    made.add(WARM, [warm])
    made.add(FIRST, [first])
    return made


def test_across_compares_each_runtime_with_the_first() -> None:
    reports = [report("python3", 2.0, 50.0), report("nodejs20", 3.0, 200.0)]
    assert across(reports) == {
        "nodejs20 / python3 warm p50": 1.5,
        "nodejs20 / python3 first call with stem p50": 4.0,
    }
    assert across(reports[:1]) == {}
    assert across([]) == {}
