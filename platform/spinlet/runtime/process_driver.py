"""A driver that runs the runtime server as a plain local process: no isolation, no limits.

For fast tests and for development without Docker. Each sandbox is `python server.py` in its own
session (so killing its process group kills whatever the function started), with its socket and
its `TMPDIR` in a directory of its own, and its code in a code directory of its own filled at
`/init` (`codedirs.py`, as for containers; not read-only: the process runs as the node's user).
The image, memory and CPU of a shape are ignored; there is
no OOM case. A process that exits unless destroyed is reported to the `watch` listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import TextIO, Unpack

from spinlet.errors import RuntimeBackendError
from spinlet.layers.target import PythonTarget, host_target
from spinlet.paths import runtimes_dir
from spinlet.runtime.backend import Capacity, FunctionSpec
from spinlet.runtime.codedirs import CODE, LAYER, CodeDirs
from spinlet.runtime.driver import (
    RUNTIME_LABEL,
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
)
from spinlet.runtime.pool import PoolBackend, PoolOptions

PROCESS_IMAGE_ID = "process:python3"
#: A sandbox's output, in its directory, when it is created with `keep_output`.
OUTPUT = "output.log"
#: How much of the end of that file `ending` reads.
TAIL_BYTES = 64 * 1024


class ProcessDriver:
    name = "process"

    def __init__(
        self, socket_root: Path, *, node_id: str = "local", code_root: Path | None = None
    ) -> None:
        self.socket_root = Path(socket_root)
        self.node_id = node_id
        self.server = runtimes_dir() / "python" / "server.py"
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._prefix = name_prefix(node_id)
        self._name_re = name_pattern(node_id)
        self._code = CodeDirs(code_root or self.socket_root / CODE, self._name_re)
        self._listener: ExitListener | None = None
        self._waits: set[asyncio.Task[None]] = set()

    async def image_id(self, image: str) -> str | None:
        return PROCESS_IMAGE_ID

    async def keep_image(self, image_id: str, keep: bool) -> None:
        """Processes run the host's Python: there is no image to keep."""

    async def capacity(self) -> Capacity:
        """The machine's: the CPUs this process may run on and the physical memory."""
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return Capacity(cpu=len(os.sched_getaffinity(0)) * 1000, memory_size=memory)

    async def image_labels(self, image: str) -> dict[str, str]:
        """Every sandbox runs the Python runtime server, whatever the image."""
        return {RUNTIME_LABEL: "python3"}

    async def create(
        self, shape: SandboxShape, spec: FunctionSpec | None = None, *, keep_output: bool = False
    ) -> Sandbox:
        name = self._prefix + secrets.token_hex(4)
        directory = self.socket_root / name
        socket_path = directory / SOCKET_NAME
        check_socket_path(socket_path)
        await asyncio.to_thread(self._make_dirs, name)
        output: int | TextIO = asyncio.subprocess.DEVNULL
        if keep_output:  # in its own directory, removed with it
            output = await asyncio.to_thread(open, directory / OUTPUT, "w")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SPINLET_SOCKET": str(socket_path),
            "TMPDIR": str(directory / "tmp"),
            "HOME": str(directory / "tmp"),
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(self.server),
                cwd=directory,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output if keep_output else asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            await asyncio.to_thread(self._remove_dir, name)
            raise RuntimeBackendError(f"could not start the runtime process: {exc}") from exc
        finally:
            if not isinstance(output, int):
                output.close()  # the process has its own copy
        self._procs[name] = proc
        task = asyncio.create_task(self._wait_exit(name, proc), name=f"spinlet-wait-{name}")
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)
        return Sandbox(id=name, name=name, socket_path=socket_path, image_id=PROCESS_IMAGE_ID)

    async def fill_code(
        self, sandbox: Sandbox, package: bytes, layer: Path | None = None
    ) -> FilledDirs:
        code = await asyncio.to_thread(self._code.fill, sandbox.name, package, layer)
        return FilledDirs(str(code), None if layer is None else str(code.parent / LAYER))

    async def python_target(self, image: str) -> PythonTarget:
        """The node's own Python: the one every sandbox of this driver runs."""
        return host_target()

    async def seal(self, sandbox: Sandbox) -> None:
        """Processes run as the node's own user: there is nothing to close to them."""

    async def destroy(self, sandbox: Sandbox) -> None:
        proc = self._procs.pop(sandbox.id, None)
        if proc is not None:
            _kill_group(proc.pid)
            await proc.wait()
        await asyncio.to_thread(self._remove_dir, sandbox.name)

    async def inspect_exit(self, sandbox: Sandbox) -> ExitReason | None:
        proc = self._procs.get(sandbox.id)
        if proc is None or proc.returncode is not None:
            return "crashed"
        return None

    async def ending(self, sandbox: Sandbox, lines: int) -> Ending | None:
        proc = self._procs.get(sandbox.id)
        if proc is None:
            return Ending(None)
        if proc.returncode is None:
            return None
        output = await asyncio.to_thread(_tail, self.socket_root / sandbox.name / OUTPUT, lines)
        return Ending(proc.returncode, output)

    async def watch(self, listener: ExitListener) -> None:
        self._listener = listener

    async def _wait_exit(self, name: str, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        if self._procs.get(name) is proc and self._listener is not None:  # not destroyed
            self._listener(name, "crashed")

    async def list_leftovers(self) -> list[str]:
        found = await asyncio.to_thread(self.processes)
        return [name for name in found if name not in self._procs]

    async def remove_leftovers(self) -> int:
        found = await asyncio.to_thread(self.processes)
        leftovers = {name: pids for name, pids in found.items() if name not in self._procs}
        for pids in leftovers.values():
            for pid in pids:
                _kill_leftover(pid)
        # SIGKILL is not instant: wait (a little) until none of them runs any more.
        for _ in range(50):
            if not set(leftovers) & set(await asyncio.to_thread(self.processes)):
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(self._remove_dirs)
        return len(leftovers)

    async def close(self) -> None:
        """Kill the processes still held (a safety net: the pool destroys its own first)."""
        self._listener = None
        for name in list(self._procs):
            proc = self._procs.pop(name)
            _kill_group(proc.pid)
            await proc.wait()
        for task in list(self._waits):
            task.cancel()
        await asyncio.gather(*self._waits, return_exceptions=True)
        await asyncio.to_thread(self._remove_dirs)

    def processes(self) -> dict[str, list[int]]:
        """Runtime processes of this node, by sandbox name (from their `SPINLET_SOCKET`).

        Blocking (reads `/proc`): call it in a thread."""
        marker = f"SPINLET_SOCKET={self.socket_root}/{self._prefix}".encode()
        found: dict[str, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            for var in environ.split(b"\0"):
                if var.startswith(marker):
                    name = Path(var.decode(errors="replace").split("=", 1)[1]).parent.name
                    if self._name_re.fullmatch(name):
                        found.setdefault(name, []).append(int(entry.name))
        return found

    def _make_dirs(self, name: str) -> None:
        (self.socket_root / name / "tmp").mkdir(parents=True, mode=0o700)
        self._code.make(name)

    def _remove_dir(self, name: str) -> None:
        shutil.rmtree(self.socket_root / name, ignore_errors=True)
        self._code.remove(name)

    def _remove_dirs(self) -> None:
        self._code.remove_stale(self._procs)
        if not self.socket_root.is_dir():
            return
        for directory in self.socket_root.iterdir():
            if self._name_re.fullmatch(directory.name) and directory.name not in self._procs:
                shutil.rmtree(directory, ignore_errors=True)


def _tail(path: Path, lines: int) -> str:
    """The last `lines` lines of the file at `path` ("" when there is none)."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_leftover(pid: int) -> None:
    """Kill a leftover runtime process and its process group (never our own group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        pgid = os.getpgid(pid)
        if pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)


def process_backend(
    socket_root: Path,
    *,
    node_id: str = "local",
    code_root: Path | None = None,
    **options: Unpack[PoolOptions],
) -> PoolBackend:
    """A warm pool of local runtime processes whose sockets live under `socket_root`."""
    return PoolBackend(ProcessDriver(socket_root, node_id=node_id, code_root=code_root), **options)
