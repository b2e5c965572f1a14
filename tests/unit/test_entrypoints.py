"""Which names an entry module defines, read with `ast` without running it."""

from __future__ import annotations

import ast
import textwrap

import pytest

from spinlet.entrypoints import defines, top_level_names


def module(source: str) -> ast.Module:
    return ast.parse(textwrap.dedent(source))


@pytest.mark.parametrize(
    "source",
    [
        "def main(event): return event",
        "async def main(event): return event",
        "class main:\n    def __call__(self, event): return event",
        "main = lambda event: event",
        "main: object = print",
        "handler, main = print, print",
        "[a, *main] = [1, 2]",
        "from json import dumps as main",
        "from json import main",
        "import main",
        "import json as main",
        "if True:\n    def main(e): return e\nelse:\n    main = None",
        "try:\n    from fast import main\nexcept ImportError:\n    def main(e): return e",
        "with open(__file__) as main:\n    pass",
        "for main in range(1):\n    pass",
        "if (main := print):\n    pass",
        "@decorate\ndef main(event): return event",
    ],
)
def test_a_top_level_binding_defines_the_name(source: str) -> None:
    assert defines(module(source), "main")


@pytest.mark.parametrize(
    "source",
    [
        "",
        "def handler(event): return event",
        "def outer():\n    def main(e): return e",
        "class Handler:\n    def main(self, e): return e",
        "x = [main for main in range(3)]",
        "f = lambda main: main",
        "print('main')",
        "MAIN = 1",
    ],
)
def test_a_name_bound_elsewhere_or_not_at_all_is_not_defined(source: str) -> None:
    assert not defines(module(source), "main")


def test_a_dotted_import_binds_its_first_name() -> None:
    assert top_level_names(module("import os.path\nimport xml.dom as dom")) == {"os", "dom"}


@pytest.mark.parametrize(
    "source",
    [
        "from handlers import *",
        "globals()['main'] = print",
        "globals().update(main=print)",
        "vars()['main'] = print",
        "exec('def main(e): return e')",
        "import sys\nsetattr(sys.modules[__name__], 'main', print)",
        "def __getattr__(name): return print",
        "def setup():\n    global main\n    main = print\nsetup()",
    ],
)
def test_what_only_running_the_module_tells_is_accepted(source: str) -> None:
    assert defines(module(source), "main")
