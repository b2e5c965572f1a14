"""Whether an entry module defines its function, read from the source without running it.

A name counts as defined when the module's top level binds it: `def`/`async def`, `class`, an
assignment (plain, annotated, augmented, unpacking, `:=`), an `import … as` or `from … import`,
a `for` or `with … as` target, an `except … as`; statements nested in a top-level `if`, `try`,
`with`, `for`, `while` or `match` count too (`try: from fast import main except ImportError:
…` is common), whichever branch would run.

What cannot be known without running the module is accepted, and the function is then looked
up when a container loads it, as before: a `from x import *`, a module `__getattr__` (PEP 562),
a `global` statement naming it, or any call of `globals`, `vars`, `exec` or `setattr`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

#: Calls through which a module may bind names that no statement shows.
DYNAMIC_CALLS = frozenset({"globals", "vars", "exec", "setattr"})

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def defines(tree: ast.Module, name: str) -> bool:
    """True when the module binds `name` at its top level or may bind it dynamically."""
    return name in top_level_names(tree) or _dynamic(tree, name)


def top_level_names(tree: ast.Module) -> set[str]:
    """The names a module's top level binds (see the module's docstring)."""
    names: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".", 1)[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
    return names


def _top_level(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of the module's own scope: the `def` and `class` statements but nothing in
    them, and no comprehension's own loop variables (a `:=` in a comprehension does count)."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _SCOPES):
            continue
        if isinstance(node, ast.comprehension):
            stack.extend([node.iter, *node.ifs])
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _dynamic(tree: ast.Module, name: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True
        if isinstance(node, ast.Global) and name in node.names:
            return True
        called = node.func if isinstance(node, ast.Call) else None
        if isinstance(called, ast.Name) and called.id in DYNAMIC_CALLS:
            return True
    return "__getattr__" in top_level_names(tree)
