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

from spinlet.errors import InvalidSetting

DEFAULT_PORT = 7070
MiB = 1024 * 1024
#: The stores' URL schemes (as `spinlet.store.database.DRIVERS`, without loading it).
DATABASES = ("sqlite+aiosqlite", "postgresql+asyncpg")
#: Settings given as numbers (`SPINLET_<NAME>`), and their kind.
NUMBERS: dict[str, type[int] | type[float]] = {
    "database_pool": int,
    "keep_alive": float,
    "max_containers": int,
    "max_memory": int,
    "stem_cells": int,
    "default_concurrency": int,
    "concurrency_queue": int,
    "concurrency_wait": float,
    "project_concurrency": int,
    "project_containers": int,
    "workers": int,
    "result_ttl": float,
    "record_ttl": float,
    "retention_interval": float,
    "cancel_grace": float,
    "shutdown_grace": float,
    "heartbeat_interval": float,
    "node_lease": float,
    "max_layer_size": int,
    "max_input_size": int,
    "max_result_size": int,
    "log_limit": int,
    "layer_build_timeout": float,
    "layer_lease": float,
    "webhook_rate": int,
}
#: Those of them that 0 would break (the others may be 0).
POSITIVE = frozenset(NUMBERS) - {
    "keep_alive",
    "stem_cells",
    "concurrency_queue",
    "concurrency_wait",
    "cancel_grace",
    "shutdown_grace",
}


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
    max_input_size: int = 1 * MiB  # an execution's input, as compact JSON
    max_result_size: int = 1 * MiB  # an execution's result, as compact JSON
    log_limit: int = 1 * MiB  # an execution's log: a longer one keeps its head and its tail
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
    max_layer_size: int = 500 * MiB  # a dependency layer as installed
    layer_build_timeout: float = 600.0  # seconds pip may take to resolve and install a layer
    layer_lease: float = 30.0  # a node building a layer silent this long: another takes over
    webhook_rate: int = 50  # a project's webhook calls per second on a node, at most (then 429)
    # Host names (besides its listening address and loopback) the node answers to: those of
    # its load balancer, or `*` for any (SPINLET_ALLOWED_HOSTS, comma-separated).
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from `SPINLET_*` variables, then `overrides` (flags; None: not given).

        A wrong value is an `InvalidSetting` naming the variable, so that a command says so in
        one line instead of failing later with a traceback.
        """
        env = os.environ
        values: dict[str, Any] = {}
        if "SPINLET_DATA_DIR" in env:
            values["data_dir"] = Path(env["SPINLET_DATA_DIR"])
        for name in ("database_url", "node_id", "backend", "auth", "runtime_image"):
            if f"SPINLET_{name.upper()}" in env:
                values[name] = env[f"SPINLET_{name.upper()}"]
        if "SPINLET_ALLOWED_HOSTS" in env:
            values["allowed_hosts"] = tuple(
                host.strip().lower()
                for host in env["SPINLET_ALLOWED_HOSTS"].split(",")
                if host.strip()
            )
        for name, kind in NUMBERS.items():
            raw = env.get(f"SPINLET_{name.upper()}")
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise InvalidSetting(
                        f"SPINLET_{name.upper()} must be a number, not {raw!r}"
                    ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values that would only fail later (InvalidSetting, naming the variable)."""
        choices = {"backend": ("docker", "process"), "auth": ("on", "off", "auto")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InvalidSetting(
                    f"SPINLET_{name.upper()} must be {', '.join(allowed[:-1])} or "
                    f"{allowed[-1]}, not {getattr(self, name)!r}"
                )
        for name in NUMBERS:
            value = getattr(self, name)
            if value is not None and (value <= 0 if name in POSITIVE else value < 0):
                least = "more than 0" if name in POSITIVE else "0 or more"
                raise InvalidSetting(f"SPINLET_{name.upper()} must be {least}, not {value}")
        scheme, sep, _ = (self.database_url or "sqlite+aiosqlite://").partition("://")
        if not sep or scheme not in DATABASES:  # (the URL may hold a password: not shown)
            raise InvalidSetting(
                "SPINLET_DATABASE_URL must be sqlite+aiosqlite:///PATH or "
                f"postgresql+asyncpg://USER:PASSWORD@HOST/DATABASE, not a {scheme!r} URL"
            )
        if self.node_lease <= self.heartbeat_interval:
            raise InvalidSetting(
                "SPINLET_NODE_LEASE must be longer than SPINLET_HEARTBEAT_INTERVAL "
                f"({self.node_lease:g} s is not more than {self.heartbeat_interval:g} s)"
            )

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

    @property
    def builds_dir(self) -> Path:
        """Scratch space of dependency layer builds (pip runs there; emptied after each)."""
        return self.data_dir / "builds"

    def run_dir(self, node_id: str) -> Path:
        """Where container sockets live: short, since a Unix socket path has 107 bytes at most."""
        root = os.environ.get("SPINLET_RUN_DIR") or tempfile.gettempdir()
        return Path(root) / f"spinlet-{node_id}"

    def code_root(self, node_id: str) -> Path:
        """Where the sandboxes' code directories live (`runtime/codedirs.py`), which the engine
        bind-mounts by their path on its host: in the data dir (on disk) by default; beside the
        sockets when `SPINLET_RUN_DIR` is set, the directory that a node in a container shares
        with the engine's host at the same path (`deploy/compose.yaml`)."""
        if os.environ.get("SPINLET_RUN_DIR"):
            return self.run_dir(node_id) / "code"
        return self.data_dir / "code"

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
