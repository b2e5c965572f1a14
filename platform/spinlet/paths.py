"""Where Spinlet's own non-Python files live (runtime sources, deploy scripts)."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout this package runs from (`platform/spinlet/` is two levels below it)."""
    override = os.environ.get("SPINLET_HOME")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2]


def runtimes_dir() -> Path:
    return project_root() / "runtimes"


def deploy_dir() -> Path:
    return project_root() / "deploy"
