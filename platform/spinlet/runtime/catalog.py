"""The runtimes shipped with Spinlet: what each runs, and how its image is built.

Every node registers them all at start (public, built in); it builds an image only when asked
(`spinlet runtimes build NAME`, `POST /v1/runtimes/{id}/build`) or on first use. `python3` is
the default, the one `spinlet serve` and the quickstart build up front.

Each image is built from a directory of `runtimes/` (`context`) on `public_base` where a
registry can be reached, else on `offline_base`, an image bootstrapped from the Debian packages
of `suite` (`deploy/bootstrap-base-image.sh`, with `packages`): one trixie base serves Python 3.13
and Node.js 20. The README's runtime table is written from `CATALOG`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Self


@dataclass(frozen=True)
class OfflineBase:
    """A base image made from Debian packages where no registry can be reached."""

    tag: str
    suite: str  # the Debian release: bookworm, trixie
    packages: tuple[str, ...]  # what `debootstrap --include` adds to minbase


@dataclass(frozen=True)
class ShippedRuntime:
    name: str
    language: str  # "Python 3.11"
    description: str
    handler: str  # the handler's signature, as users write it
    dependencies: str  # how a function brings its dependencies
    context: str  # the build context, a directory of `runtimes/`
    public_base: str
    offline_base: OfflineBase
    image: str  # the tag this node builds

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)


BOOKWORM_PYTHON = OfflineBase("spinlet/base-python:bookworm", "bookworm", ("python3",))
TRIXIE = OfflineBase("spinlet/base:trixie", "trixie", ("python3", "nodejs"))


def _python(version: str, public_base: str, offline_base: OfflineBase) -> ShippedRuntime:
    """A Python runtime: the same server (`runtimes/python`) on another Python."""
    name = "python3" if version == "3.11" else f"python{version}"
    return ShippedRuntime(
        name=name,
        language=f"Python {version}",
        description=f"Python {version} (built in)",
        handler="def main(event, context): ...",
        dependencies="`requirements.txt` (in the zip, or given on its own): wheels for its Python",
        context="python",
        public_base=public_base,
        offline_base=offline_base,
        image=f"spinlet/runtime-{name}:1",
    )


PYTHON3 = _python("3.11", "python:3.11-slim-bookworm", BOOKWORM_PYTHON)
PYTHON313 = _python("3.13", "python:3.13-slim-trixie", TRIXIE)
NODEJS20 = ShippedRuntime(
    name="nodejs20",
    language="Node.js 20",
    description="Node.js 20 (built in)",
    handler="module.exports.main = async (event, context) => ...",
    dependencies="`node_modules/` inside the zip (no npm registry is reached)",
    context="nodejs",
    public_base="node:20-bookworm-slim",
    offline_base=TRIXIE,
    image="spinlet/runtime-nodejs20:1",
)

#: Every shipped runtime, the default first.
CATALOG: tuple[ShippedRuntime, ...] = (PYTHON3, PYTHON313, NODEJS20)
DEFAULT = PYTHON3


def shipped(name: str) -> ShippedRuntime | None:
    """The shipped runtime of that name, if there is one."""
    return next((entry for entry in CATALOG if entry.name == name), None)


def catalog(default_image: str = DEFAULT.image) -> tuple[ShippedRuntime, ...]:
    """The catalogue as a node uses it: the default runtime's image may be another tag
    (`SPINLET_RUNTIME_IMAGE`)."""
    return tuple(
        entry.evolve(image=default_image) if entry is DEFAULT else entry for entry in CATALOG
    )


def markdown_table() -> str:
    """The README's runtime table."""
    lines = [
        "| Runtime | Language | Handler | Dependencies |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{e.name}` | {e.language} | `{e.handler}` | {e.dependencies} |" for e in CATALOG]
    return "\n".join(lines)
