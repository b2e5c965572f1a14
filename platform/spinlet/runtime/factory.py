"""Choose a runtime backend by name, from configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from spinlet.runtime.backend import RuntimeBackend
from spinlet.runtime.pool import PoolOptions

BACKENDS = ("docker", "process")


def make_backend(
    kind: str,
    *,
    node_id: str,
    work_dir: Path,
    code_root: Path | None = None,
    **options: Unpack[PoolOptions],
) -> RuntimeBackend:
    """A backend of `kind` ("docker" or "process") whose sockets live under `work_dir/sockets`,
    with the pool `options` (see `PoolBackend`).

    The sandboxes' code directories (`codedirs.py`) live under `code_root` (default
    `work_dir/code`): the node gives its data dir's, on a disk rather than in memory.

    `stem_cells` is 0 unless given here, so that callers that do not ask get the pool they
    had. Keep `work_dir` short: a Unix socket path may not exceed 107 bytes.
    """
    socket_root = Path(work_dir) / "sockets"
    code_root = code_root or Path(work_dir) / "code"
    options.setdefault("stem_cells", 0)
    if kind == "docker":
        from spinlet.runtime.docker_driver import docker_backend  # the Docker SDK, only if used

        return docker_backend(node_id, socket_root, code_root=code_root, **options)
    if kind == "process":
        from spinlet.runtime.process_driver import process_backend

        return process_backend(socket_root, node_id=node_id, code_root=code_root, **options)
    raise ValueError(f"unknown runtime backend {kind!r}; choose one of: {', '.join(BACKENDS)}")
