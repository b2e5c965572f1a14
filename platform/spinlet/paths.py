"""Where Spinlet's own non-Python files live (runtime sources, deploy scripts)."""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout this package runs from (`platform/spinlet/` is two levels below it), resolved
#: once: resolving reads the file system, which the event loop must not wait for.
_CHECKOUT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The checkout this package runs from, or `$SPINLET_HOME`."""
    override = os.environ.get("SPINLET_HOME")
    if override:
        return Path(override)
    return _CHECKOUT


def runtimes_dir() -> Path:
    return project_root() / "runtimes"


def deploy_dir() -> Path:
    return project_root() / "deploy"
