"""The schema, as SQLAlchemy Core tables. Alembic migrations must produce exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no time zones); always read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(36)

projects = Table(
    "projects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

#: The nodes sharing this store, with their heartbeats: a node whose heartbeat is older than the
#: lease has stopped, and the executions it was running are recovered by the others.
nodes = Table(
    "nodes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    # What it published with its last heartbeat: its warm containers (the functions' workers),
    # its capacity and its built runtimes (`services/workers.py`).
    Column("report", JSON),
)

#: Package contents, where nodes share the store (PostgreSQL): each node caches them on disk.
package_blobs = Table(
    "package_blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

runtimes = Table(
    "runtimes",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("image", String(512), nullable=False),
    Column("description", Text),
    Column("status", String(16), nullable=False),
    Column("is_public", Boolean, nullable=False),
    Column("trusted", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime()),
    Index(None, "project_id", "name", unique=True),
)

packages = Table(
    "packages",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("md5sum", String(32), nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

functions = Table(
    "functions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("description", Text),
    Column("runtime_id", ID, ForeignKey("runtimes.id"), nullable=False),
    Column("entry", String(255), nullable=False),
    Column("package_sha256", String(64), ForeignKey("packages.sha256"), nullable=False),
    Column("timeout", Float, nullable=False),
    Column("memory_size", BigInteger, nullable=False),  # bytes: beyond 32 bits
    Column("cpu", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    # How often an async execution that was lost (its node died) is tried again.
    Column("retries", Integer, nullable=False, server_default="0"),
    # How many of its executions run at once on a node (more wait in line, then get a 429).
    Column("concurrency", Integer, nullable=False, server_default="10"),
    # Environment variables for its code (secrets among them: never shown by the API).
    Column("environment", JSON, nullable=False, server_default="{}"),
    # Whether its containers have a network (an isolated one); off: no network at all.
    Column("network", Boolean, nullable=False, server_default=false()),
    # The version counter: the last number published, never decremented (numbers not reused).
    Column("latest_version", Integer, nullable=False, server_default="0"),
    # How many containers the fleet keeps initialised for its current code (scale_up).
    Column("provisioned", Integer, nullable=False, server_default="0"),
    # Its dependencies: the normalised requirements, the build resolving them (shared by every
    # function asking for the same), the layer it runs with, and why the build failed.
    Column("requirements", Text),
    Column("build_key", String(64)),
    Column("layer_id", String(64)),
    Column("status_message", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime()),
    Index(None, "project_id", "name", unique=True),
    Index(None, "build_key"),
)

#: Immutable snapshots of a function: its package, configuration and runtime image id.
function_versions = Table(
    "function_versions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    Column("function_id", ID, ForeignKey("functions.id"), nullable=False),
    Column("version_number", Integer, nullable=False),
    Column("description", Text),
    Column("runtime_id", ID, ForeignKey("runtimes.id"), nullable=False),
    Column("image_id", String(128), nullable=False),
    Column("entry", String(255), nullable=False),
    Column("package_sha256", String(64), ForeignKey("packages.sha256"), nullable=False),
    Column("timeout", Float, nullable=False),
    Column("memory_size", BigInteger, nullable=False),  # bytes: beyond 32 bits
    Column("cpu", Integer, nullable=False),
    Column("environment", JSON, nullable=False, server_default="{}"),
    Column("network", Boolean, nullable=False, server_default=false()),
    Column("config_hash", String(64), nullable=False),
    # The dependency layer it pins, and that layer's "name==version" list (None: none).
    Column("layer_id", String(64)),
    Column("dependencies", JSON(none_as_null=True)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime()),
    Index(None, "function_id", "version_number", unique=True),
    Index(None, "package_sha256"),
)

#: Resolving one requirements text for one runtime, shared by the functions that ask for it. A
#: node holds a `building` one (`owner`) until `lease_until`; after that another may take it.
layer_builds = Table(
    "layer_builds",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("runtime_id", ID, nullable=False),
    Column("requirements", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("message", Text),
    Column("layer_id", String(64)),
    Column("owner", String(64)),
    Column("lease_until", UTCDateTime()),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime()),
    Index(None, "status", "created_at"),
)

#: Dependency layers, content-addressed: the archive is in `layer_chunks`; a layer is usable
#: once `complete` (an incomplete one is an upload in progress, or one a dead builder left).
layers = Table(
    "layers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("target", String(255), nullable=False),
    Column("dependencies", JSON, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("archive_sha256", String(64), nullable=False),
    Column("archive_size", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("complete", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

#: A layer's archive in pieces, numbered from 0: read and written one piece at a time.
layer_chunks = Table(
    "layer_chunks",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

#: Names for a function at a version (0: its current code), with an optional weighted canary.
aliases = Table(
    "aliases",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("function_id", ID, ForeignKey("functions.id"), nullable=False),
    Column("function_version", Integer, nullable=False),
    Column("routing_version", Integer),
    Column("routing_weight", Float),
    Column("description", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime()),
    Index(None, "project_id", "name", unique=True),
    Index(None, "function_id"),
)

executions = Table(
    "executions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    # No foreign key: executions stay readable after their function is deleted.
    Column("function_id", ID, nullable=False),
    Column("function_name", String(255), nullable=False),
    Column("function_version", Integer, nullable=False),
    Column("function_alias", String(255)),
    Column("status", String(16), nullable=False),
    Column("status_reason", String(64)),
    Column("sync", Boolean, nullable=False),
    Column("input", JSON(none_as_null=True)),
    Column("error", JSON(none_as_null=True)),
    Column("duration_ms", Float),
    Column("start_kind", String(8)),
    Column("init_ms", Float),
    Column("image_id", String(128)),
    Column("container_id", String(128)),
    Column("source", String(16), nullable=False),
    # The webhook that made it (no foreign key: executions outlive their webhook).
    Column("webhook_id", String(64)),
    Column("description", Text),
    Column("node_id", String(64)),
    Column("expired", Boolean, nullable=False),
    # Canonical hash of the create request, for idempotent retries with a client-chosen id.
    Column("request_hash", String(64)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # Set by a cancel request: "graceful" or "kill"; the node running it acts on it.
    Column("cancel_requested", String(16)),
    # The cron job that fired it (no foreign key: it stays once the job is deleted).
    Column("job_id", ID),
    # When a `scheduled` execution is queued (`schedule`); kept once it is.
    Column("scheduled_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("updated_at", UTCDateTime()),
    Index(None, "project_id", "function_id", "status", "created_at", "id"),
    Index(None, "project_id", "created_at", "id"),
    Index(None, "status", "created_at"),
    Index(None, "finished_at"),
    Index(None, "webhook_id"),
    Index(None, "job_id", "created_at"),
    Index(None, "status", "scheduled_at"),
)

#: Cron jobs: each fires an async execution at every tick of its pattern. A tick is fired by
#: moving `next_execution_time` on from it (a conditional update) in the transaction that
#: inserts its execution, so a fleet fires each tick once (`store/jobs.py`).
jobs = Table(
    "jobs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    Column("name", String(255)),
    # No foreign key: a job of a deleted function skips its ticks (the function may be back).
    Column("function_id", ID, nullable=False),
    Column("function_version", Integer, nullable=False),
    Column("function_alias", String(255)),
    Column("function_input", JSON(none_as_null=True)),
    Column("pattern", String(255)),
    Column("timezone", String(64), nullable=False),
    Column("first_execution_time", UTCDateTime()),
    Column("next_execution_time", UTCDateTime()),
    Column("count", Integer),
    Column("status", String(16), nullable=False),
    Column("skipped", Integer, nullable=False, server_default="0"),
    Column("last_execution_id", ID),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime()),
    Index(None, "status", "next_execution_time"),
    Index(None, "project_id", "created_at"),
)

#: Results and logs live apart from the execution row (they can be large and expire first).
execution_outputs = Table(
    "execution_outputs",
    metadata,
    Column(
        "execution_id",
        ID,
        ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("result", JSON(none_as_null=True)),
    Column("logs", Text, nullable=False),
)

#: API tokens: each belongs to a project and has a role. Only a hash of the secret is stored.
tokens = Table(
    "tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("name", String(255)),
    Column("prefix", String(16), nullable=False),  # the secret's start, to recognise it
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
)

#: URLs that run a function without a token. The id is the secret: 128 random bits, shown to
#: the project's members; an invocation finds it by its SHA-256 (indexed) and then compares the
#: id itself in constant time, so the time of a miss tells nothing of any stored id.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    Column("function_id", ID, ForeignKey("functions.id"), nullable=False),
    Column("function_alias", String(255)),
    Column("function_version", Integer, nullable=False),
    Column("mode", String(8), nullable=False),
    Column("description", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime()),
    Index(None, "project_id", "created_at"),
    Index(None, "function_id"),
)
