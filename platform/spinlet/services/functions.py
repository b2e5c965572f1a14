"""Functions: uploading code and its configuration."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

from spinlet import packages, requirements
from spinlet.domain import Function, FunctionStatus, Package, Runtime
from spinlet.errors import RuntimeBackendError, ValidationFailed
from spinlet.packages import ANY, LANGUAGES, PYTHON, Language, PackageLimits, PackageStore
from spinlet.runtime.backend import RuntimeBackend
from spinlet.runtime.driver import RUNTIME_LABEL
from spinlet.runtime.probes import language_of
from spinlet.services.layers import LayerService, build_key
from spinlet.services.packages import forget_package
from spinlet.services.runtime_builds import RuntimeBuilds
from spinlet.services.runtimes import BUILTIN_RUNTIME, check_name
from spinlet.services.versions import release_images
from spinlet.settings import Settings
from spinlet.store import Store

MiB = 1024 * 1024
#: Bounds on every node; the node's engine may allow less (`RuntimeBackend.capacity`).
MIN_MEMORY, MAX_MEMORY = 16 * MiB, 16384 * MiB
MIN_CPU, MAX_CPU = 10, 64000


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ENV_VARS = 100
MAX_ENV_BYTES = 32 * 1024


def check_environment(environment: dict[str, str]) -> dict[str, str]:
    """Variable names a shell accepts, none of Spinlet's own (`SPINLET_*`), bounded in size."""
    if len(environment) > MAX_ENV_VARS:
        raise ValidationFailed(f"at most {MAX_ENV_VARS} environment variables are allowed")
    for name in environment:
        if not ENV_NAME.match(name):
            raise ValidationFailed(
                f"environment variable name {name!r} is not valid: use letters, digits and _"
            )
        if name.upper().startswith("SPINLET_"):
            raise ValidationFailed(f"environment variable {name!r}: SPINLET_* names are reserved")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in environment.items())
    if size > MAX_ENV_BYTES:
        raise ValidationFailed(
            f"the environment is {size} bytes; the limit is {MAX_ENV_BYTES} bytes"
        )
    return dict(environment)


def _new_environment(current: dict[str, str], fields: FunctionFields) -> dict[str, str]:
    """`environment` replaces the `current` variables; then `environment_add` sets some and
    `environment_remove` unsets some (so an update can change one without knowing the rest,
    whose values the API never shows)."""
    environment = dict(current if fields.environment is None else fields.environment)
    environment.update(fields.environment_add or {})
    for name in fields.environment_remove:
        environment.pop(name, None)
    return environment


def _requirements_source(fields: FunctionFields, own: str | None) -> tuple[str | None, str]:
    """The requirements text asked for and where it came from (for messages): the field wins
    over the package's `requirements.txt`."""
    if fields.requirements is not None:
        return fields.requirements, "requirements"
    return own, "requirements.txt"


def check_function_name(name: str) -> str:
    """A name as runtimes have, that cannot be taken for an id: functions are addressed by
    either, and a name that parses as a UUID would hide (or be hidden by) a function's id."""
    check_name("function", name)
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise ValidationFailed(
        f"function name {name!r} looks like a UUID, which only ids may: choose another name"
    )


@dataclass(frozen=True)
class Upload:
    """A package as it arrived: the bytes and the file name the client gave."""

    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class FunctionFields:
    """What a create or update may set; None means "not given" (unchanged on update)."""

    name: str | None = None
    runtime: str | None = None
    entry: str | None = None
    description: str | None = None
    timeout: float | None = None
    memory_size: int | None = None
    cpu: int | None = None
    retries: int | None = None  # extra attempts for an async execution whose node died
    concurrency: int | None = None  # executions of it at once on a node
    environment: dict[str, str] | None = None  # replaces all variables when given
    environment_add: dict[str, str] | None = None  # set these, keep the others
    environment_remove: tuple[str, ...] = ()  # unset these (absent ones: ignored)
    network: bool | None = None  # an isolated network for its containers (default: none)
    # Its dependencies (requirements.txt lines); "" removes them. Not given: those of the
    # uploaded package's own requirements.txt when it has one, else unchanged.
    requirements: str | None = None
    md5sum: str | None = None


class FunctionService:
    def __init__(
        self,
        store: Store,
        package_store: PackageStore,
        backend: RuntimeBackend,
        settings: Settings,
        layers: LayerService,
        *,
        builds: RuntimeBuilds,
    ) -> None:
        self.store = store
        self.package_store = package_store
        self.backend = backend
        self.settings = settings
        self.layers = layers
        self.builds = builds
        self.limits = PackageLimits(max_size=settings.max_package_size)

    async def _check_limits(self, fields: FunctionFields) -> None:
        """Bounds of every node, then what this node's engine can give (asked of the backend
        only when `cpu` or `memory_size` is set). In a fleet each node checks against its own
        engine: nodes of one size agree."""
        s = self.settings
        if fields.timeout is not None and not 0 < fields.timeout <= s.max_timeout:
            raise ValidationFailed(f"timeout must be between 0 and {s.max_timeout:g} seconds")
        if fields.memory_size is not None and fields.memory_size < MIN_MEMORY:
            raise ValidationFailed(
                f"memory_size must be at least {MIN_MEMORY // MiB} MiB (it is in bytes)"
            )
        if fields.cpu is not None and fields.cpu < MIN_CPU:
            raise ValidationFailed(f"cpu must be at least {MIN_CPU} millicores")
        if fields.memory_size is None and fields.cpu is None:
            return
        capacity = await self.backend.capacity()
        top_memory = min(MAX_MEMORY, capacity.memory_size)
        if fields.memory_size is not None and fields.memory_size > top_memory:
            raise ValidationFailed(
                f"memory_size {fields.memory_size} is more than this node can give: at most "
                f"{top_memory} bytes ({top_memory / MiB:g} MiB)"
            )
        top_cpu = min(MAX_CPU, capacity.cpu)
        if fields.cpu is not None and fields.cpu > top_cpu:
            raise ValidationFailed(
                f"cpu {fields.cpu} is more than this node can give: at most {top_cpu} "
                f"millicores ({top_cpu / 1000:g} CPUs)"
            )

    async def _language(self, runtime: Runtime) -> Language:
        """The language of the runtime's packages: a shipped runtime's; for an image someone
        registered, the one its `spinlet.runtime` label names (`python…`, `node…`), else any
        (its server checks the code at `/init`)."""
        entry = self.builds.shipped(runtime)
        if entry is not None:
            return LANGUAGES.get(entry.context, ANY)
        try:
            labels = await self.backend.image_labels(runtime.image)
        except RuntimeBackendError:  # not on this node (yet): its server will tell
            return ANY
        return LANGUAGES.get(language_of(labels.get(RUNTIME_LABEL)) or "", ANY)

    async def _store_package(
        self, upload: Upload, entry: str | None, md5sum: str | None, language: Language
    ) -> tuple[Package, str, str | None]:
        """Validate and keep a package; returns it with the entry to use and the text of its
        own `requirements.txt` (a Python package's). The checks and the hashing read up to
        `max_unpacked_size` bytes: they run in a thread, in one step."""
        ready = await asyncio.to_thread(
            packages.prepare,
            upload.data,
            upload.filename,
            self.limits,
            entry=entry,
            md5sum=md5sum,
            language=language,
        )
        own = None
        if language is not packages.NODEJS:
            own = await asyncio.to_thread(requirements.from_package, ready.data)
        return await self.package_store.put(ready.data, ready.package), ready.entry, own

    async def _dependencies(
        self, function: Function, text: str | None, *, source: str, language: Language = PYTHON
    ) -> dict[str, object]:
        """The fields that give `function` (as it will be saved) the dependencies of `text`
        (None: unchanged): its build asked for, and `building` until its layer is ready (at once
        `available` when another function's identical build is). Refused lines are a 400."""
        if text is None:
            wanted_text, key = function.requirements, function.build_key
            if key is None or key == build_key(
                function.runtime_id, requirements.parse(wanted_text or "")
            ):
                return {}  # unchanged, and still for the same runtime
        else:
            wanted_text = text
        wanted = requirements.parse(wanted_text or "", source=source)
        if wanted.lines and language is packages.NODEJS:
            raise ValidationFailed(
                "a Node.js function takes no requirements (pip resolves Python packages): "
                "bring its dependencies as node_modules/ inside its package"
            )
        if not wanted.lines:
            return {
                "requirements": None,
                "build_key": None,
                "layer_id": None,
                "status": FunctionStatus.AVAILABLE,
                "status_message": None,
            }
        build = await self.layers.request(function.runtime_id, wanted)
        ready = build.status is FunctionStatus.AVAILABLE
        return {
            "requirements": wanted.text,
            "build_key": build.key,
            "layer_id": build.layer_id if ready else function.layer_id,
            "status": FunctionStatus.AVAILABLE if ready else FunctionStatus.BUILDING,
            "status_message": None,
        }

    async def create(self, project_id: str, fields: FunctionFields, upload: Upload) -> Function:
        if not fields.name:
            raise ValidationFailed("name is required")
        check_function_name(fields.name)
        await self._check_limits(fields)
        runtime = await self.store.runtimes.get(project_id, fields.runtime or BUILTIN_RUNTIME)
        language = await self._language(runtime)
        package, entry, own = await self._store_package(
            upload, fields.entry, fields.md5sum, language
        )
        await self.builds.ensure(runtime.image)  # first use: its image is built meanwhile
        s = self.settings
        function = Function(
            id=str(uuid.uuid4()),
            name=fields.name,
            runtime_id=runtime.id,
            package=package,
            entry=entry,
            description=fields.description,
            timeout=fields.timeout or s.default_timeout,
            memory_size=fields.memory_size or s.default_memory_size,
            cpu=fields.cpu or s.default_cpu,
            retries=fields.retries or 0,
            concurrency=fields.concurrency or s.default_concurrency,
            environment=check_environment(_new_environment({}, fields)),
            network=bool(fields.network),
            status=FunctionStatus.AVAILABLE,
            project_id=project_id,
        )
        text, source = _requirements_source(fields, own)
        function = function.evolve(
            **await self._dependencies(function, text or "", source=source, language=language)
        )
        return await self.store.functions.create(function)

    async def get(self, project_id: str, ref: str) -> Function:
        return await self.store.functions.get(project_id, ref)

    async def list(self, project_id: str | None) -> list[Function]:
        return await self.store.functions.list(project_id)

    async def update(
        self, project_id: str, ref: str, fields: FunctionFields, upload: Upload | None
    ) -> Function:
        function = await self.store.functions.get(project_id, ref)
        await self._check_limits(fields)
        changes: dict[str, object] = {}
        if fields.name is not None:
            changes["name"] = check_function_name(fields.name)
        if fields.runtime is not None:
            runtime = await self.store.runtimes.get(project_id, fields.runtime)
            changes["runtime_id"] = runtime.id
            await self.builds.ensure(runtime.image)
        else:
            runtime = await self.store.runtimes.get(project_id, function.runtime_id)
        language = await self._language(runtime)
        for attr in (
            "description",
            "timeout",
            "memory_size",
            "cpu",
            "retries",
            "concurrency",
            "network",
        ):
            value = getattr(fields, attr)
            if value is not None:
                changes[attr] = value
        if fields.environment is not None or fields.environment_add or fields.environment_remove:
            changes["environment"] = check_environment(
                _new_environment(function.environment, fields)
            )
        old_sha = function.package.sha256
        own: str | None = None
        if upload is not None:
            package, entry, own = await self._store_package(
                upload, fields.entry or function.entry, fields.md5sum, language
            )
            changes.update(package=package, entry=entry)
        elif fields.entry is not None or fields.runtime is not None:
            entry = fields.entry or function.entry
            code = await self.package_store.get(old_sha)
            await asyncio.to_thread(packages.check_entry, code, entry, language)
            changes["entry"] = entry
        text, source = _requirements_source(fields, own if upload is not None else None)
        changed = function.evolve(**changes)
        changes.update(await self._dependencies(changed, text, source=source, language=language))
        updated = await self.store.functions.update(function.evolve(**changes))
        if updated.package.sha256 != old_sha:
            await self._forget_package(old_sha)
        return updated

    async def rebuild(self, project_id: str, ref: str) -> Function:
        """Resolve the function's requirements again (its status is `building` meanwhile)."""
        function = await self.store.functions.get(project_id, ref)
        await self.layers.rebuild(function)
        return await self.store.functions.get(project_id, function.id)

    async def delete(self, project_id: str, ref: str) -> None:
        """Delete a function and its versions (refused while aliases point at it); its
        executions stay readable."""
        function = await self.store.functions.get(project_id, ref)
        hashes, images = await self.store.functions.delete(function)
        for sha256 in sorted(hashes):
            await self._forget_package(sha256)
        await release_images(self.store, self.backend, images)

    async def download(self, project_id: str, ref: str) -> tuple[Function, bytes]:
        function = await self.store.functions.get(project_id, ref)
        return function, await self.package_store.get(function.package.sha256)

    async def _forget_package(self, sha256: str) -> None:
        await forget_package(self.store, self.package_store, sha256)
