"""What the runtime-backend tests share: the backend kinds under test and test functions.

The fixtures built on these (`target`, `socket_root`, `backend`) are in this folder's conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spinlet.runtime.backend import FunctionSpec, RunOutcome, RunRequest
from spinlet.runtime.pool import PoolBackend
from spinlet.runtime.process_driver import ProcessDriver, process_backend
from tests.helpers import make_package, package_hash

HELLO = """
    import os, subprocess, sys

    def main(event, context):
        print("hello from print")
        sys.stdout.flush()
        os.write(1, b"hello from fd 1\\n")
        subprocess.run(["echo", "hello from a child"], check=True)
        print("hello from stderr", file=sys.stderr)
        return {"greeting": "hello " + event["name"], "execution_id": context.execution_id}
"""

COUNTER = """
    calls = 0

    def main(event):
        global calls
        calls += 1
        return calls
"""

RAISES = """
    def main(event):
        print("about to fail")
        raise ValueError("boom " + str(event))
"""

BUSY_LOOP = """
    import signal

    def main(event):
        try:
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
        except ValueError:  # not in the main thread: nothing to ignore then
            pass
        while True:
            pass
"""

SLEEPS = """
    import time

    def main(event):
        time.sleep(event)
        return event
"""

#: Uses PyYAML's C loader (a compiled module), and says where PyYAML was imported from.
YAML_C_LOADER = """
    import yaml

    def main(event):
        return {
            "with_libyaml": yaml.__with_libyaml__,
            "loader": yaml.CLoader.__module__,
            "module": yaml._yaml.__file__.rsplit("/", 1)[-1],
            "from": yaml.__file__,
            "loaded": yaml.load(event, Loader=yaml.CLoader),
        }
"""

#: What a function can see and change of the node's files: where a file named `secret` is
#: found, what it can do to a directory of its own (`mine`, default its code's) and `file` in
#: it, and what listing each of `paths` gives (an `errno` name, or "done").
PEEKS = """
    import errno, os

    def attempt(action):
        try:
            action()
        except OSError as exc:
            return errno.errorcode[exc.errno]
        return "done"

    def main(event):
        found = []
        for top in ("/var", "/tmp", "/run", "/opt", "/srv", "/mnt", "/home"):
            for root, dirs, files in os.walk(top):
                found += [os.path.join(root, f) for f in files + dirs if f == event["secret"]]
        here = os.path.dirname(__file__)
        mine = event.get("mine", here)
        existing = os.path.join(mine, event.get("file", "main.py"))
        return {
            "mount": sorted(os.listdir("/var/spinlet")),
            "code": here,
            "found": found,
            "append": attempt(lambda: open(existing, "a").close()),
            "create": attempt(lambda: open(os.path.join(mine, "new.py"), "w").close()),
            "mkdir": attempt(lambda: os.mkdir(os.path.join(mine, "new"))),
            "chmod": attempt(lambda: os.chmod(existing, 0o777)),
            "remove": attempt(lambda: os.remove(existing)),
            "others": [attempt(lambda: os.listdir(path)) for path in event["paths"]],
        }
"""


@dataclass
class Target:
    """A backend kind under test, and what a test needs to make and inspect backends of it."""

    kind: str
    node_id: str
    socket_root: Path
    image: str
    docker_client: Any = None

    def make(self, **options: Any) -> PoolBackend:
        """A backend of this kind; without stem cells unless `stem_cells` is given."""
        options.setdefault("stem_cells", 0)
        if self.kind == "docker":
            from spinlet.runtime.docker_driver import docker_backend

            return docker_backend(
                self.node_id, self.socket_root, client=self.docker_client, **options
            )
        return process_backend(self.socket_root, node_id=self.node_id, **options)

    @contextlib.asynccontextmanager
    async def opened(self, **options: Any) -> AsyncIterator[PoolBackend]:
        """An open backend (see `make`), closed afterwards with nothing left behind."""
        backend = self.make(**options)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()
        assert await self.leftovers() == []
        assert self.code_dirs() == []

    def spec(self, source: str, **changes: Any) -> tuple[FunctionSpec, bytes]:
        package = make_package(source)
        spec = FunctionSpec(
            function_id=f"fn-{uuid.uuid4().hex[:8]}",
            function_name="test-function",
            version=1,
            package_hash=package_hash(package),
            image=self.image,
            timeout=20.0,
        )
        return replace(spec, **changes), package

    async def leftovers(self) -> list[str]:
        """Sandboxes of this node still alive, seen from outside the backend."""
        if self.kind == "docker":
            found = await asyncio.to_thread(
                self.docker_client.containers.list,
                all=True,
                ignore_removed=True,
                filters={"label": f"spinlet.node={self.node_id}"},
            )
            return [container.name for container in found]
        driver = ProcessDriver(self.socket_root, node_id=self.node_id)  # holds nothing
        return await driver.list_leftovers()

    def code_dirs(self) -> list[str]:
        """The sandboxes' code directories on the host (under the default code root)."""
        root = self.socket_root / "code"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.name.startswith("spinlet-"))

    async def kill(self, sandbox_id: str) -> None:
        """Kill a sandbox from outside, as a crash or an operator would."""
        if self.kind == "docker":
            container = await asyncio.to_thread(self.docker_client.containers.get, sandbox_id)
            await asyncio.to_thread(container.kill)
            return
        driver = ProcessDriver(self.socket_root, node_id=self.node_id)
        for pid in (await asyncio.to_thread(driver.processes))[sandbox_id]:
            os.kill(pid, signal.SIGKILL)


async def execute(
    backend: PoolBackend, spec: FunctionSpec, package: bytes, data: Any = None
) -> RunOutcome:
    async def load_code() -> bytes:
        return package

    request = RunRequest(execution_id=str(uuid.uuid4()), input=data)
    return await backend.execute(spec, load_code, request)
