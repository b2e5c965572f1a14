"""Configuration, from `SPINLET_*` environment variables and CLI flags."""

from __future__ import annotations

import functools
import ipaddress
import os
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_PORT = 7070
MiB = 1024 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def default_data_dir() -> Path:
    return Path(os.environ.get("SPINLET_DATA_DIR", Path.home() / ".spinlet"))


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    database_url: str | None = None  # default: SQLite file in data_dir
    database_pool: int | None = None  # connections to PostgreSQL (default: the store's, 20)
    node_id: str | None = None  # default: from SPINLET_NODE_ID or a file in data_dir
    backend: str = "docker"  # docker | process
    auth: str = "auto"  # on | off | auto: on unless the server listens only on loopback
    runtime_image: str = "spinlet/runtime-python3:1"
    keep_alive: float = 300.0  # idle seconds before a warm container is removed
    max_containers: int = 64
    max_memory: int | None = None  # cap on the containers' memory limits summed (bytes)
    stem_cells: int = 2  # started, uninitialised containers kept per shape (0: none)
    default_concurrency: int = 10  # a function's executions at once on a node, unless set
    concurrency_queue: int = 100  # sync executions waiting for a function's slot, at most
    concurrency_wait: float = 10.0  # seconds a sync execution waits for a slot before a 429
    project_concurrency: int = 100  # a project's executions at once on a node (its quota)
    project_containers: int = 48  # a project's containers on a node, at most (its quota)
    max_package_size: int = 50 * MiB  # compressed
    max_request_size: int = 60 * MiB
    max_input_size: int = 1 * MiB
    max_result_size: int = 1 * MiB
    log_limit: int = 1 * MiB
    default_timeout: float = 60.0
    max_timeout: float = 900.0
    default_memory_size: int = 128 * MiB
    default_cpu: int = 1000
    workers: int = 8  # async executions run at once on this node
    result_ttl: float = 7 * 86400.0  # results and logs of finished executions are dropped after
    record_ttl: float = 30 * 86400.0  # finished execution records are purged after
    retention_interval: float = 60.0
    cancel_grace: float = 2.0  # a cancel without kill lets the execution finish this long
    shutdown_grace: float = 10.0  # on SIGTERM, running executions get this long
    heartbeat_interval: float = 2.0  # how often a node records that it lives
    node_lease: float = 10.0  # a node silent this long has stopped: others recover its work
    max_wait: float = 300.0  # the longest `?wait=` a request may ask for
    # Host names (besides its listening address and loopback) the node answers to: those of
    # its load balancer, or `*` for any (SPINLET_ALLOWED_HOSTS, comma-separated).
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = os.environ
        values: dict[str, Any] = {}
        if "SPINLET_DATA_DIR" in env:
            values["data_dir"] = Path(env["SPINLET_DATA_DIR"])
        if "SPINLET_DATABASE_URL" in env:
            values["database_url"] = env["SPINLET_DATABASE_URL"]
        if "SPINLET_NODE_ID" in env:
            values["node_id"] = env["SPINLET_NODE_ID"]
        if "SPINLET_BACKEND" in env:
            values["backend"] = env["SPINLET_BACKEND"]
        if "SPINLET_AUTH" in env:
            values["auth"] = env["SPINLET_AUTH"]
        if "SPINLET_RUNTIME_IMAGE" in env:
            values["runtime_image"] = env["SPINLET_RUNTIME_IMAGE"]
        if "SPINLET_ALLOWED_HOSTS" in env:
            values["allowed_hosts"] = tuple(
                host.strip().lower()
                for host in env["SPINLET_ALLOWED_HOSTS"].split(",")
                if host.strip()
            )
        for name, kind in (
            ("database_pool", int),
            ("keep_alive", float),
            ("max_containers", int),
            ("max_memory", int),
            ("stem_cells", int),
            ("default_concurrency", int),
            ("concurrency_queue", int),
            ("concurrency_wait", float),
            ("project_concurrency", int),
            ("project_containers", int),
            ("workers", int),
            ("result_ttl", float),
            ("record_ttl", float),
            ("retention_interval", float),
            ("cancel_grace", float),
            ("shutdown_grace", float),
            ("heartbeat_interval", float),
            ("node_lease", float),
        ):
            raw = env.get(f"SPINLET_{name.upper()}")
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ValueError(
                        f"SPINLET_{name.upper()} must be a number, not {raw!r}"
                    ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("auth", "auto") not in ("on", "off", "auto"):
            raise ValueError(f"SPINLET_AUTH must be on, off or auto, not {values['auth']!r}")
        return cls(**values)

    def evolve(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @functools.cached_property  # read on every request
    def auth_enabled(self) -> bool:
        """Whether requests need a token: always, unless only this machine can reach us."""
        if self.auth != "auto":
            return self.auth == "on"
        return not is_loopback(self.host)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'spinlet.db'}"

    @property
    def packages_dir(self) -> Path:
        return self.data_dir / "packages"

    def run_dir(self, node_id: str) -> Path:
        """Where container sockets live: short, since a Unix socket path has 107 bytes at most."""
        root = os.environ.get("SPINLET_RUN_DIR") or tempfile.gettempdir()
        return Path(root) / f"spinlet-{node_id}"

    def resolve_node_id(self) -> str:
        """`SPINLET_NODE_ID`, else an id kept in the data dir (made on first use)."""
        if self.node_id:
            return self.node_id
        path = self.data_dir / "node-id"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        node_id = uuid.uuid4().hex[:12]
        path.write_text(node_id + "\n")
        return node_id
