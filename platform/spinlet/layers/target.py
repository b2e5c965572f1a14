"""Which wheels a runtime can load: its Python's implementation, version, ABI and platforms.

The node does not guess from an image's name: it runs `PROBE` with the image's own `python3`
once per image (`RuntimeBackend.python_target`) and turns the answer into the arguments pip
needs to pick wheels for that interpreter (`--implementation`, `--python-version`, `--abi`,
`--platform`), whatever Python the node itself runs.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

from spinlet.errors import RuntimeBackendError

#: Printed by the runtime's interpreter: everything `PythonTarget.from_probe` needs.
PROBE = (
    "import json, os, platform, sys; "
    "libc = os.confstr('CS_GNU_LIBC_VERSION') if hasattr(os, 'confstr') else None; "
    "print(json.dumps({'implementation': sys.implementation.name, "
    "'version': '%d.%d' % sys.version_info[:2], 'abiflags': getattr(sys, 'abiflags', ''), "
    "'libc': libc or '', 'machine': platform.machine()}))"
)

#: The oldest glibc a manylinux wheel may target (`manylinux1` is glibc 2.5).
_OLDEST_GLIBC_MINOR = 5
#: The legacy manylinux names and the glibc they stand for.
_LEGACY = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
_IMPLEMENTATIONS = {"cpython": "cp", "pypy": "pp"}


@dataclass(frozen=True)
class PythonTarget:
    """A runtime's interpreter as pip's wheel selection sees it."""

    implementation: str  # "cp"
    version: str  # "3.11"
    abi: str  # "cp311"
    platforms: tuple[str, ...]  # newest first: "manylinux_2_36_x86_64", ...

    @property
    def key(self) -> str:
        """A short name of what the target accepts (part of a layer's content address)."""
        version = self.version.replace(".", "")
        return f"{self.implementation}{version}-{self.abi}-{self.platforms[0]}"

    def pip_arguments(self) -> list[str]:
        """The arguments that make pip choose wheels for this target (with `--only-binary`)."""
        arguments = [
            "--implementation",
            self.implementation,
            "--python-version",
            self.version,
            "--abi",
            self.abi,
        ]
        for tag in self.platforms:
            arguments += ["--platform", tag]
        return arguments

    @classmethod
    def from_probe(cls, answer: str | dict[str, Any]) -> PythonTarget:
        """The target a runtime's `PROBE` describes; `RuntimeBackendError` when it cannot be
        read or names an interpreter or C library Spinlet cannot pick wheels for."""
        try:
            probe = json.loads(answer) if isinstance(answer, str) else answer
            name, version = str(probe["implementation"]), str(probe["version"])
            abiflags, libc = str(probe.get("abiflags", "")), str(probe.get("libc", ""))
            machine = str(probe["machine"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeBackendError(f"the runtime's Python could not be probed: {exc}") from exc
        implementation = _IMPLEMENTATIONS.get(name)
        major, _, minor = version.partition(".")
        if implementation is None or not (major.isdigit() and minor.isdigit()):
            raise RuntimeBackendError(f"the runtime's Python ({name} {version}) has no wheels")
        glibc = libc.split()
        if len(glibc) != 2 or glibc[0] != "glibc":
            raise RuntimeBackendError(
                f"the runtime's C library ({libc or 'unknown'}) is not glibc: only manylinux "
                "wheels are supported"
            )
        try:
            glibc_minor = int(glibc[1].split(".")[1])
        except (IndexError, ValueError) as exc:
            raise RuntimeBackendError(f"the runtime's glibc version {glibc[1]!r}") from exc
        return cls(
            implementation=implementation,
            version=f"{major}.{minor}",
            abi=f"{implementation}{major}{minor}{abiflags}",
            platforms=manylinux_platforms(glibc_minor, machine),
        )


def manylinux_platforms(glibc_minor: int, machine: str) -> tuple[str, ...]:
    """Every manylinux platform tag a glibc 2.`glibc_minor` system on `machine` runs, newest
    first, legacy names included (pip does not expand `--platform` tags by itself)."""
    tags = [f"manylinux_2_{m}_{machine}" for m in range(glibc_minor, _OLDEST_GLIBC_MINOR - 1, -1)]
    tags += [f"{legacy}_{machine}" for legacy, m in _LEGACY.items() if m <= glibc_minor]
    return tuple(tags)


def host_target() -> PythonTarget:
    """The node's own interpreter (for the process driver, whose sandboxes run it)."""
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    return PythonTarget.from_probe(
        {
            "implementation": sys.implementation.name,
            "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
            "abiflags": getattr(sys, "abiflags", ""),
            "libc": libc or "",
            "machine": platform.machine(),
        }
    )
