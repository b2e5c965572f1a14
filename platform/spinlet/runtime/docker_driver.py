"""The Docker driver: hardened runtime containers, one per sandbox.

The only module that touches the Docker SDK. The SDK blocks, so every call runs in a small thread
pool of its own, never on the event loop, and its errors become `RuntimeBackendError` here.

A container runs the runtime image as user 10001 with a read-only root, a `/tmp` tmpfs of
`TMP_SIZE` (the function's scratch space, counted against its memory), its own code directory
(`codedirs.py`: `code/` and its dependency `layer/`) bind-mounted read-only at `/var/spinlet`
and filled by the node at `/init`, all
capabilities dropped, `no-new-privileges`, a pids limit, a memory limit without swap, a CPU quota,
no network (or, for a function that asks, the isolated one of `docker_network.py`) and the
`none` log driver (but for a runtime check's: `keep_output`, so that a runtime that exits at
once can be told why). It is reached through a Unix socket in a host directory
(`socket_root/<container name>/`) bind-mounted at `/run/spinlet`. Containers carry the labels
`spinlet.node` and `spinlet.shape`, and when created for a function (not as a stem cell)
`spinlet.function`, `spinlet.version` and `spinlet.pool_key`; a node only ever lists or removes
containers with its own `spinlet.node` label. Containers that stop are reported from the engine's
event stream (`docker_events.py`).

`python_target` asks an image's Python what wheels it loads in a throwaway container with the
same restrictions (and no mount, no network), labelled with the node too, so that one left by a
crash is removed with the other leftovers.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, Unpack

import docker
import docker.errors
from docker.types import LogConfig

from spinlet.errors import ImageMissing, RuntimeBackendError
from spinlet.layers.target import PROBE, PythonTarget
from spinlet.runtime.backend import Capacity, FunctionSpec
from spinlet.runtime.codedirs import CODE, LAYER, MOUNT_POINT, CodeDirs
from spinlet.runtime.docker_events import DockerEventWatch
from spinlet.runtime.docker_network import ensure_function_network
from spinlet.runtime.driver import (
    SOCKET_DIR,
    SOCKET_NAME,
    Ending,
    ExitListener,
    ExitReason,
    FilledDirs,
    Sandbox,
    SandboxShape,
    check_socket_path,
    name_pattern,
    name_prefix,
    pool_key_hash,
)
from spinlet.runtime.pool import PoolBackend, PoolOptions

_T = TypeVar("_T")

RUNTIME_USER = "10001:10001"
#: The container's `/tmp`: scratch space for the function (its code is not there), a tmpfs and
#: so part of the function's memory.
TMP_SIZE = 64 * 1024 * 1024
TMPFS_OPTIONS = f"rw,size={TMP_SIZE},mode=1777"
PIDS_LIMIT = 256
NODE_LABEL = "spinlet.node"
#: Where a container sees its dependency layer.
LAYER_DIR = f"{MOUNT_POINT}/{LAYER}"
#: The probe of an image's Python (`python_target`): a throwaway container this small, with the
#: sandboxes' other restrictions, and this long to answer (a Python start takes ~50 ms).
PROBE_MEMORY = 64 * 1024 * 1024
PROBE_CPU = 1000
PROBE_TIMEOUT = 60.0

#: The log of a container whose output is read by the node (an image's probe, a runtime check):
#: the engine's own file, bounded.
KEPT_OUTPUT = LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m"})

#: Tags that keep the images of published versions (`spinlet/kept:<short image id>`).
KEPT_REPOSITORY = "spinlet/kept"


class DockerDriver:
    name = "docker"

    def __init__(
        self,
        node_id: str,
        socket_root: Path,
        *,
        client: Any = None,  # a docker.DockerClient; made from the environment when omitted
        max_workers: int = 8,
        code_root: Path | None = None,  # default: `socket_root/code`
    ) -> None:
        self.node_id = node_id
        self.socket_root = Path(socket_root)
        self._client = client
        self._owns_client = client is None
        self._client_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="spinlet-docker")
        self._prefix = name_prefix(node_id)  # the label keeps the node id as it is
        self._name_re = name_pattern(node_id)
        self._code = CodeDirs(code_root or self.socket_root / CODE, self._name_re)
        self._closed = False
        self._held: dict[str, str] = {}  # id -> name of the containers this driver created
        self._events: DockerEventWatch | None = None
        self._network: str | None = None  # the functions' network, once made or found
        self._capacity: Capacity | None = None  # the engine's, once asked
        self._targets: dict[str, PythonTarget] = {}  # by image id, once probed
        self._probe_lock = asyncio.Lock()

    # -- the executor boundary ---------------------------------------------------------------

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking SDK call in the driver's threads; translate its errors."""
        if self._closed:
            raise RuntimeBackendError("the Docker driver is closed")
        loop = asyncio.get_running_loop()
        if self._client is None:
            await self._connect(loop)
        return await self._run(loop, functools.partial(func, *args))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> Any:
        """The Docker client, made from the environment on first use."""
        async with self._client_lock:
            if self._client is None:
                self._client = await self._run(loop, docker.from_env)
        return self._client

    async def _run(self, loop: asyncio.AbstractEventLoop, func: Callable[[], _T]) -> _T:
        try:
            return await loop.run_in_executor(self._executor, func)
        except RuntimeBackendError:
            raise
        except (docker.errors.DockerException, OSError) as exc:
            raise RuntimeBackendError(f"Docker engine: {exc}") from exc

    # -- Driver ------------------------------------------------------------------------------

    async def image_id(self, image: str) -> str | None:
        return await self._call(self._image_id_sync, image)

    async def keep_image(self, image_id: str, keep: bool) -> None:
        await self._call(self._keep_image_sync, image_id, keep)

    async def capacity(self) -> Capacity:
        """The engine's CPUs and memory (`docker info`: NCPU, MemTotal): Docker refuses a CPU
        quota above NCPU. Asked once: an engine does not change size while it runs."""
        if self._capacity is None:
            self._capacity = await self._call(self._capacity_sync)
        return self._capacity

    async def image_labels(self, image: str) -> dict[str, str]:
        return await self._call(self._image_labels_sync, image)

    async def create(
        self, shape: SandboxShape, spec: FunctionSpec | None = None, *, keep_output: bool = False
    ) -> Sandbox:
        return await self._call(self._create_sync, shape, spec, keep_output)

    async def seal(self, sandbox: Sandbox) -> None:
        # Writable by the runtime user only until it made its socket: from now on, root's.
        os.chmod(sandbox.socket_path.parent, 0o755)

    async def fill_code(
        self, sandbox: Sandbox, package: bytes, layer: Path | None = None
    ) -> FilledDirs:
        await asyncio.to_thread(self._code.fill, sandbox.name, package, layer)
        return FilledDirs(f"{MOUNT_POINT}/{CODE}", None if layer is None else LAYER_DIR)

    async def python_target(self, image: str) -> PythonTarget:
        """Asked of the image's own `python3` (`target.PROBE`) in a throwaway container, once
        per image id: a rebuilt tag is probed again, a known image costs no Docker call but
        resolving its tag."""
        image_id = await self.image_id(image)
        if image_id is None:
            raise ImageMissing(
                f"the runtime image {image!r} is not present on this node; "
                "build it with `spinlet runtimes build`",
                image=image,
            )
        async with self._probe_lock:  # one probe per image, however many builds ask at once
            target = self._targets.get(image_id)
            if target is None:
                answer = await self._call(self._probe_sync, image_id)
                target = self._targets[image_id] = PythonTarget.from_probe(answer)
        return target

    async def destroy(self, sandbox: Sandbox) -> None:
        await self._call(self._remove_sync, sandbox.id, sandbox.name)

    async def inspect_exit(self, sandbox: Sandbox) -> ExitReason | None:
        return await self._call(self._inspect_exit_sync, sandbox.id)

    async def ending(self, sandbox: Sandbox, lines: int) -> Ending | None:
        return await self._call(self._ending_sync, sandbox.id, lines)

    async def watch(self, listener: ExitListener) -> None:
        if self._closed:
            raise RuntimeBackendError("the Docker driver is closed")
        if self._events is not None:
            return
        loop = asyncio.get_running_loop()
        client = await self._connect(loop)
        self._events = DockerEventWatch(client, NODE_LABEL, self.node_id, loop, listener)
        self._events.start()

    async def list_leftovers(self) -> list[str]:
        return [name for _, name in await self._call(self._leftovers_sync)]

    async def remove_leftovers(self) -> int:
        leftovers = await self._call(self._leftovers_sync)
        await asyncio.gather(*(self._call(self._remove_sync, *item) for item in leftovers))
        await self._call(self._remove_stale_dirs_sync)
        return len(leftovers)

    async def close(self) -> None:
        """Remove the containers still held (a safety net: the pool destroys its own first)."""
        try:
            if self._events is not None:
                await self._events.stop(self._executor)
                self._events = None
            held = list(self._held.items())
            await asyncio.gather(*(self._call(self._remove_sync, *item) for item in held))
            if self._client is not None and self._owns_client:
                await self._call(self._client.close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)

    # -- blocking parts, run in the executor -------------------------------------------------

    def _image_id_sync(self, image: str) -> str | None:
        try:
            return str(self._client.images.get(image).id)
        except docker.errors.ImageNotFound:
            return None

    def _image_labels_sync(self, image: str) -> dict[str, str]:
        try:
            config = self._client.api.inspect_image(image).get("Config") or {}
        except docker.errors.ImageNotFound:
            missing = f"image {image!r} is not present on this node"
            raise ImageMissing(missing, image=image) from None
        return dict(config.get("Labels") or {})

    def _capacity_sync(self) -> Capacity:
        info = self._client.info()
        try:
            return Capacity(cpu=int(info["NCPU"]) * 1000, memory_size=int(info["MemTotal"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeBackendError(f"Docker engine: no NCPU or MemTotal: {exc}") from exc

    def _keep_image_sync(self, image_id: str, keep: bool) -> None:
        # A tag of its own holds the image: a rebuilt runtime tag leaves it tagged, not
        # dangling (so `docker image prune` spares it). Several nodes on one engine share it.
        tag = image_id.removeprefix("sha256:")[:12]
        try:
            if keep:
                self._client.api.tag(image_id, KEPT_REPOSITORY, tag=tag)
            else:  # only the tag goes (forced: containers may still run the image)
                self._client.api.remove_image(f"{KEPT_REPOSITORY}:{tag}", force=True)
        except docker.errors.NotFound:
            if keep:
                raise ImageMissing(
                    f"image {image_id} is not present on this node", image=image_id
                ) from None

    def _create_sync(
        self, shape: SandboxShape, spec: FunctionSpec | None, keep_output: bool
    ) -> Sandbox:
        network = "none"
        if shape.network:
            if self._network is None:
                self._network = ensure_function_network(self._client)
            network = self._network
        name = self._prefix + secrets.token_hex(4)
        directory = self.socket_root / name
        check_socket_path(directory / SOCKET_NAME)
        directory.mkdir(parents=True)
        os.chmod(directory, 0o777)  # the runtime user (10001) creates its socket here
        try:
            code_dir = self._code.make(name)
        except BaseException:
            self._remove_sync(None, name)
            raise
        api = self._client.api
        host_config = self._hardened(
            memory_size=shape.memory_size,
            cpu=shape.cpu,
            network=network,
            binds={
                str(directory): {"bind": SOCKET_DIR, "mode": "rw"},
                str(code_dir): {"bind": MOUNT_POINT, "mode": "ro"},
            },
            log_config=KEPT_OUTPUT if keep_output else None,
        )
        labels = {NODE_LABEL: self.node_id, "spinlet.shape": shape.label()}
        if spec is not None:  # a stem cell's labels name no function, even once initialised
            labels["spinlet.function"] = spec.function_id
            labels["spinlet.version"] = str(spec.version)
            labels["spinlet.pool_key"] = pool_key_hash(spec)
        container_id: str | None = None
        try:
            created = api.create_container(
                shape.image_id,
                name=name,
                user=RUNTIME_USER,
                environment={"SPINLET_SOCKET": f"{SOCKET_DIR}/{SOCKET_NAME}"},
                labels=labels,
                host_config=host_config,
                use_config_proxy=False,
            )
            container_id = str(created["Id"])
            self._held[container_id] = name
            api.start(container_id)
        except BaseException as exc:
            self._remove_sync(container_id, name)
            if isinstance(exc, docker.errors.ImageNotFound):
                image = spec.image if spec is not None else shape.image_id
                raise ImageMissing(
                    f"the runtime image {image!r} is not present on this node; "
                    "build it with `spinlet runtimes build`",
                    image=image,
                ) from exc
            raise
        return Sandbox(
            id=container_id,
            name=name,
            socket_path=directory / SOCKET_NAME,
            image_id=shape.image_id,
        )

    def _hardened(
        self,
        *,
        memory_size: int,
        cpu: int,
        network: str = "none",
        binds: dict[str, dict[str, str]] | None = None,
        log_config: LogConfig | None = None,
    ) -> Any:
        """The host config of every container this driver makes (see the module's docstring):
        read-only root, a small `/tmp`, no capabilities, no new privileges, bounded pids,
        memory without swap and CPU; no logs unless `log_config` says otherwise."""
        return self._client.api.create_host_config(
            binds=binds or {},
            read_only=True,
            tmpfs={"/tmp": TMPFS_OPTIONS},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=PIDS_LIMIT,
            mem_limit=memory_size,
            memswap_limit=memory_size,
            nano_cpus=cpu * 1_000_000,
            network_mode=network,
            log_config=log_config or LogConfig(type=LogConfig.types.NONE),
            auto_remove=False,
        )

    def _ending_sync(self, container_id: str, lines: int) -> Ending | None:
        api = self._client.api
        try:
            state = api.inspect_container(container_id)["State"]
        except docker.errors.NotFound:
            return Ending(None)
        if state.get("Running") or state.get("Status") in ("created", "running"):
            return None
        try:  # the engine keeps no output of a container with the `none` log driver
            output = api.logs(container_id, stdout=True, stderr=True, tail=lines)
        except docker.errors.APIError:
            output = b""
        code = state.get("ExitCode")
        return Ending(code if isinstance(code, int) else None, output.decode(errors="replace"))

    def _probe_sync(self, image_id: str) -> str:
        """What `PROBE` prints in a throwaway container of the image, as the runtime user with
        the sandboxes' restrictions, no network and no mount; removed whatever happens. Its
        output is read from the engine's `json-file` log (sandboxes have none at all)."""
        api = self._client.api
        host_config = self._hardened(
            memory_size=PROBE_MEMORY, cpu=PROBE_CPU, log_config=KEPT_OUTPUT
        )
        name = self._prefix + "probe-" + secrets.token_hex(4)
        container_id: str | None = None
        try:
            created = api.create_container(
                image_id,
                name=name,
                entrypoint=["python3", "-c", PROBE],
                command=[],
                user=RUNTIME_USER,
                labels={NODE_LABEL: self.node_id},
                host_config=host_config,
                use_config_proxy=False,
            )
            container_id = str(created["Id"])
            self._held[container_id] = name
            api.start(container_id)
            status = api.wait(container_id, timeout=PROBE_TIMEOUT).get("StatusCode")
            output: bytes = api.logs(container_id, stdout=True, stderr=status != 0)
        finally:
            self._remove_sync(container_id, name)
        text = output.decode(errors="replace").strip()
        if status != 0:
            raise RuntimeBackendError(
                f"the Python of image {image_id} could not be probed (exit status {status}): "
                f"{text[-1000:]}"
            )
        return text

    def _remove_sync(self, container_id: str | None, name: str) -> None:
        if container_id is not None:
            try:
                self._client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # removal already in progress
                    raise
            self._held.pop(container_id, None)
        if self._name_re.fullmatch(name):
            shutil.rmtree(self.socket_root / name, ignore_errors=True)
            self._code.remove(name)

    def _inspect_exit_sync(self, container_id: str) -> ExitReason | None:
        try:
            state = self._client.api.inspect_container(container_id)["State"]
        except docker.errors.NotFound:
            return "crashed"
        if state.get("OOMKilled"):
            return "oom"
        if state.get("Running") or state.get("Status") in ("created", "running"):
            return None
        return "crashed"

    def _leftovers_sync(self) -> list[tuple[str, str]]:
        """(id, name) of this node's containers that this driver does not hold."""
        found = self._client.api.containers(
            all=True, filters={"label": f"{NODE_LABEL}={self.node_id}"}
        )
        return [
            (str(item["Id"]), str(item["Names"][0]).lstrip("/") if item.get("Names") else "")
            for item in found
            if item["Id"] not in self._held
        ]

    def _remove_stale_dirs_sync(self) -> None:
        held_names = set(self._held.values())
        self._code.remove_stale(held_names)
        if not self.socket_root.is_dir():
            return
        for directory in self.socket_root.iterdir():
            if self._name_re.fullmatch(directory.name) and directory.name not in held_names:
                shutil.rmtree(directory, ignore_errors=True)


def docker_backend(
    node_id: str,
    socket_root: Path,
    *,
    client: Any = None,
    code_root: Path | None = None,
    **options: Unpack[PoolOptions],
) -> PoolBackend:
    """A warm pool of Docker containers labelled `spinlet.node=<node_id>`.

    `client` is a `docker.DockerClient` to use (and not close); by default one is made from the
    environment (`DOCKER_HOST`, …) on first use and closed with the backend.
    """
    return PoolBackend(
        DockerDriver(node_id, socket_root, client=client, code_root=code_root), **options
    )
