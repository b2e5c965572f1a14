"""The Node.js runtime (`runtimes/nodejs/`) in real containers, through the Docker backend.

The image is built as the node builds it (`ensure_runtime_image`) when it is missing or was built
from other sources.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from spinlet.errors import RuntimeBackendError
from spinlet.logcap import fit_log, split_capped
from spinlet.logspool import LogSpool
from spinlet.runtime.backend import FunctionSpec, OutcomeStatus, RunOutcome, RunRequest, StartKind
from spinlet.runtime.catalog import NODEJS20
from spinlet.runtime.docker_driver import DockerDriver
from spinlet.runtime.driver import Sandbox, SandboxShape
from spinlet.runtime.images import ensure_runtime_image
from spinlet.runtime.pool import PoolBackend
from spinlet.runtime.protocol import RuntimeConnection
from tests.conftest import FUNCTIONS
from tests.helpers import eventually, package_hash, zipped
from tests.integration.runtime.backends import Target

pytestmark = pytest.mark.docker


HELLO = """
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');

module.exports.main = (event, context) => {
  console.log('hello from console.log');
  process.stdout.write('hello from stdout.write\\n');
  fs.writeSync(1, 'hello from fd 1\\n');
  spawnSync('echo', ['hello from a child'], { stdio: 'inherit' });
  console.error('hello from stderr');
  return { greeting: 'hello ' + event.name };
};
"""

RAISES = """
function check(event) {
  throw new RangeError('boom ' + event);
}
module.exports.main = async (event) => {
  console.log('about to fail');
  check(event);
};
"""

CONTEXT = """
module.exports.main = async (event, context) => {
  await new Promise((resolve) => setTimeout(resolve, 10));
  return {
    executionId: context.executionId,
    execution_id: context.execution_id,
    functionId: context.functionId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    deadline: context.deadline,
    remaining: context.remainingTime(),
  };
};
"""

ESM = """
import { hostname } from 'node:os';
let calls = 0;
export async function main(event) {
  calls += 1;
  return { calls, module: typeof require, host: typeof hostname() };
}
"""

RESULTS = """
module.exports.main = (event) => {
  if (event === 'bigint') return 10n;
  if (event === 'cycle') { const a = {}; a.self = a; return a; }
  if (event === 'function') return () => 1;
  return undefined;
};
"""

FLOOD = """
module.exports.main = (event) => {
  for (let i = 0; i < event; i += 1) console.log(`line ${i} ` + 'x'.repeat(60));
  return event;
};
"""

BIG_WRITES = """
const fs = require('node:fs');
module.exports.main = (event) => {
  let written = 0;
  for (let i = 0; i < event; i += 1) written += fs.writeSync(1, 'y'.repeat(1 << 20) + '\\n');
  console.log('done');
  return written;
};
"""

USES_DEPENDENCY = """
const shout = require('shout');
module.exports.main = (event) => shout(event);
"""

BUSY_LOOP = """
module.exports.main = (event) => {
  if (!event) return 'warm';
  console.log('before the loop');
  for (;;) {}
};
"""

EXITS = """
module.exports.main = (event) => {
  if (!event) return 'alive';
  console.log('before exit');
  process.exit(3);
};
"""


@pytest.fixture(scope="module")
def node_image(docker_client: Any) -> str:
    """The Node.js runtime image, built from `runtimes/nodejs` when missing or stale."""
    ensure_runtime_image(docker_client, runtime=NODEJS20, progress=lambda line: None)
    return NODEJS20.image


@pytest.fixture
def node_target(docker_client: Any, node_image: str, socket_root: Path) -> Target:
    return Target("docker", f"test-{uuid.uuid4().hex[:8]}", socket_root, node_image, docker_client)


@pytest.fixture
async def backend(node_target: Target) -> AsyncIterator[PoolBackend]:
    async with node_target.opened(keep_alive=60.0) as backend:
        yield backend


def node_spec(
    target: Target, source: str, *, extra: dict[str, str] | None = None, **changes: Any
) -> tuple[FunctionSpec, bytes]:
    """A Node.js function of `source` as `index.js` (and `extra` files), entry `index.main`."""
    package = zipped({"index.js": source, **(extra or {})})
    fixed = {"entry": "index.main", "function_name": "node-function"}
    spec, _ = target.spec("", **{**fixed, "package_hash": package_hash(package), **changes})
    return spec, package


class Recorder(LogSpool):
    """A log that also notes each write's stream."""

    def __init__(self, limit: int = 1024 * 1024) -> None:
        super().__init__(limit)
        self.writes: list[tuple[str, str]] = []

    def write(self, stream: str, data: str, t: float) -> None:
        super().write(stream, data, t)
        self.writes.append((stream, data))

    def stream(self, name: str) -> str:
        return "".join(data for stream, data in self.writes if stream == name)


async def execute(
    backend: PoolBackend,
    spec: FunctionSpec,
    package: bytes,
    data: Any = None,
    log: LogSpool | None = None,
) -> RunOutcome:
    async def load_code() -> bytes:
        return package

    request = RunRequest(execution_id=str(uuid.uuid4()), input=data)
    return await backend.execute(spec, load_code, request, log=log)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as log:
        yield log


async def test_hello_keeps_all_four_kinds_of_output_in_order_and_streams_apart(
    node_target: Target, backend: PoolBackend, recorder: Recorder
) -> None:
    spec, package = node_spec(node_target, HELLO)
    outcome = await execute(backend, spec, package, {"name": "world"}, recorder)
    assert outcome.status is OutcomeStatus.SUCCESS, outcome
    assert outcome.result == {"greeting": "hello world"}
    assert recorder.stream("stdout") == (
        "hello from console.log\nhello from stdout.write\nhello from fd 1\nhello from a child\n"
    )
    assert recorder.stream("stderr") == "hello from stderr\n"
    assert "hello from stderr\n" in outcome.logs
    again = await execute(backend, spec, package, {"name": "again"})
    assert (again.result, again.start_kind) == ({"greeting": "hello again"}, StartKind.WARM)
    assert again.logs.startswith("hello from console.log\n")


SLOW_AND_FAST = """
const { execFileSync } = require('node:child_process');
module.exports.main = async (event) => {
  console.log(`${event} begins`);
  if (event === 'slow') {
    await new Promise((resolve) => setTimeout(resolve, 100)); // the reader thread's run now
    console.error('slow error');
    execFileSync('echo', ['slow child'], { stdio: 'inherit' });
  }
  console.log(`${event} ends`);
  return event;
};
"""


async def test_slow_and_fast_runs_one_after_another_each_keep_their_own_output(
    node_target: Target, backend: PoolBackend
) -> None:
    """A run that outlasts a few milliseconds has its pipes read by the reader thread while it
    runs, a short one by the server at its end: each gets all of its output and nothing else."""
    spec, package = node_spec(node_target, SLOW_AND_FAST)
    for event in ("fast", "slow", "fast", "slow", "slow", "fast"):
        with Recorder() as log:
            outcome = await execute(backend, spec, package, event, log)
        assert (outcome.status, outcome.result) == (OutcomeStatus.SUCCESS, event), outcome
        if event == "slow":
            assert log.stream("stdout") == "slow begins\nslow child\nslow ends\n"
            assert log.stream("stderr") == "slow error\n"
        else:
            assert (log.stream("stdout"), log.stream("stderr")) == ("fast begins\nfast ends\n", "")


async def test_an_error_carries_its_stack_and_ends_the_log(
    node_target: Target, backend: PoolBackend, recorder: Recorder
) -> None:
    spec, package = node_spec(node_target, RAISES)
    outcome = await execute(backend, spec, package, 42, recorder)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.status_reason == "exception"
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == ("RangeError", "boom 42")
    traceback = outcome.error.traceback
    assert traceback.startswith("RangeError: boom 42\n")
    assert "at check (/var/spinlet/code/index.js:3:" in traceback
    assert "server.js" not in traceback and "node:internal" not in traceback
    assert outcome.logs == "about to fail\n" + traceback
    assert recorder.writes[-1] == ("stderr", traceback)
    [container] = await backend.containers()
    assert container.state == "idle"


async def test_the_context_names_the_execution_and_its_deadline(
    node_target: Target, backend: PoolBackend
) -> None:
    spec, package = node_spec(node_target, CONTEXT, timeout=30.0)
    before = time.time()
    outcome = await execute(backend, spec, package)
    assert outcome.status is OutcomeStatus.SUCCESS, outcome
    result = outcome.result
    assert result["executionId"] == result["execution_id"] and len(result["executionId"]) == 36
    assert (result["functionId"], result["functionName"], result["functionVersion"]) == (
        spec.function_id,
        "node-function",
        1,
    )
    assert before + 20 < result["deadline"] < time.time() + 30
    assert 0 < result["remaining"] <= 30


async def test_an_es_module_runs_and_keeps_its_state_warm(
    node_target: Target, backend: PoolBackend
) -> None:
    for files in ({"index.mjs": ESM}, {"index.js": ESM, "package.json": '{"type": "module"}'}):
        package = zipped(files)
        spec, _ = node_spec(node_target, "", package_hash=package_hash(package))
        first = await execute(backend, spec, package)
        second = await execute(backend, spec, package)
        assert first.status is OutcomeStatus.SUCCESS, first
        assert first.result == {"calls": 1, "module": "undefined", "host": "string"}
        assert (second.result["calls"], second.start_kind) == (2, StartKind.WARM)


async def test_a_result_that_is_not_json_is_an_error_and_undefined_is_null(
    node_target: Target, backend: PoolBackend
) -> None:
    spec, package = node_spec(node_target, RESULTS)
    for event in ("bigint", "cycle", "function"):
        outcome = await execute(backend, spec, package, event)
        assert outcome.status is OutcomeStatus.FAILED, event
        assert outcome.error is not None and outcome.error.type == "ResultNotSerializable"
    outcome = await execute(backend, spec, package, "undefined")
    assert (outcome.status, outcome.result) == (OutcomeStatus.SUCCESS, None)


async def test_a_long_log_keeps_its_head_and_tail_around_one_marker(
    node_target: Target, backend: PoolBackend
) -> None:
    spec, package = node_spec(node_target, FLOOD)
    with LogSpool(4096) as log:
        outcome = await execute(backend, spec, package, 5000, log)
    assert outcome.result == 5000
    line = "x" * 60 + "\n"
    assert outcome.logs.startswith("line 0 " + line)
    assert outcome.logs.endswith("line 4999 " + line)
    assert outcome.logs.count("[spinlet: log truncated, ") == 1
    assert len(outcome.logs.encode()) <= 4096


async def test_large_writes_to_fd_1_are_written_whole_while_the_node_reads(
    node_target: Target, backend: PoolBackend
) -> None:
    """fs.writeSync(1, …) blocks while the pipe is full (libuv makes pipes non-blocking: a
    write would be cut short); the log keeps its head and its tail."""
    spec, package = node_spec(node_target, BIG_WRITES)
    with LogSpool(64 * 1024) as log:
        outcome = await execute(backend, spec, package, 16, log)
    assert (outcome.status, outcome.result) == (OutcomeStatus.SUCCESS, 16 * ((1 << 20) + 1))
    head, dropped, tail = split_capped(outcome.logs.encode())
    assert (head[:3], tail) == (b"yyy", b"done\n")  # the last 1 MiB line is longer than a half
    assert len(head) + dropped + len(tail) == 16 * ((1 << 20) + 1) + len("done\n")


async def test_node_modules_inside_the_package_are_found(
    node_target: Target, backend: PoolBackend
) -> None:
    spec, package = node_spec(
        node_target,
        USES_DEPENDENCY,
        extra={
            "node_modules/shout/package.json": '{"name": "shout", "main": "lib.js"}',
            "node_modules/shout/lib.js": "module.exports = (s) => String(s).toUpperCase() + '!';",
        },
    )
    outcome = await execute(backend, spec, package, "hi")
    assert (outcome.status, outcome.result) == (OutcomeStatus.SUCCESS, "HI!")


async def test_a_missing_entry_fails_the_init_clearly(
    node_target: Target, backend: PoolBackend
) -> None:
    spec, package = node_spec(node_target, HELLO, entry="index.nope")
    outcome = await execute(backend, spec, package)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error is not None and "nope" in outcome.error.message
    spec, package = node_spec(node_target, HELLO, entry="other.main")
    outcome = await execute(backend, spec, package)
    assert outcome.error is not None and outcome.error.type == "ModuleNotFoundError"
    assert await backend.containers() == []


async def test_a_busy_loop_is_stopped_at_its_timeout_keeping_its_output(
    node_target: Target, backend: PoolBackend
) -> None:
    # A timeout the first (cold) call reaches on no loaded machine: the loop then runs to it.
    spec, package = node_spec(node_target, BUSY_LOOP, timeout=10.0)
    assert (await execute(backend, spec, package, False)).result == "warm"
    outcome = await execute(backend, spec, package, True)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.status_reason == "timeout"
    assert outcome.logs == "before the loop\n"
    assert await backend.containers() == []
    assert await node_target.leftovers() == []


async def test_process_exit_ends_the_container_as_a_crash_keeping_its_output(
    node_target: Target, backend: PoolBackend
) -> None:
    spec, package = node_spec(node_target, EXITS)
    assert (await execute(backend, spec, package, False)).result == "alive"
    outcome = await execute(backend, spec, package, True)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.status_reason == "crashed"
    assert outcome.logs == "before exit\n"
    again = await execute(backend, spec, package, False)
    assert (again.result, again.start_kind) == ("alive", StartKind.COLD)


UNCAUGHT = """
module.exports.main = (event) => {
  setTimeout(() => { throw new SyntaxError('thrown later'); }, 5);
  return new Promise(() => {}); // never settles: the uncaught error ends the run
};
"""


async def test_an_error_thrown_outside_the_handler_ends_its_run(
    node_target: Target, backend: PoolBackend
) -> None:
    spec, package = node_spec(node_target, UNCAUGHT)
    outcome = await execute(backend, spec, package)
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == ("SyntaxError", "thrown later")
    [container] = await backend.containers()
    assert container.state == "idle"


ORPHANS = """
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');

function processes() {
  const found = { zombie: 0, sleeping: 0 };
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(pid)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) found.zombie += 1;
      else if (stat.includes('(sleep)')) found.sleeping += 1;
    } catch {} // it ended meanwhile
  }
  return found;
}

module.exports.main = (event) => {
  if (event === 'leave') {
    for (let i = 0; i < 30; i += 1) spawnSync('sh', ['-c', 'sleep 1 &'], { stdio: 'ignore' });
  }
  return processes();
};
"""


async def test_orphaned_processes_are_reaped_not_left_as_zombies(
    node_target: Target, backend: PoolBackend
) -> None:
    """Orphans go to PID 1: the container's init reaps them, so they hold no pid."""
    spec, package = node_spec(node_target, ORPHANS)
    left = await execute(backend, spec, package, "leave")
    assert left.result["sleeping"] > 0  # orphans, sleeping when the run ended

    async def sleeps_ended() -> bool:
        return (await execute(backend, spec, package)).result["sleeping"] == 0

    await eventually(sleeps_ended, within=20)
    outcome = await execute(backend, spec, package)
    assert (outcome.result, outcome.start_kind) == ({"zombie": 0, "sleeping": 0}, StartKind.WARM)


# --- the protocol itself, spoken to a container of the real driver ------------------------------


@pytest.fixture
async def sandbox(node_target: Target) -> AsyncIterator[tuple[DockerDriver, Sandbox]]:
    """A started Node.js runtime container, not yet initialised; removed afterwards."""
    driver = DockerDriver(
        node_target.node_id, node_target.socket_root, client=node_target.docker_client
    )
    image_id = await driver.image_id(node_target.image)
    assert image_id is not None
    made = await driver.create(SandboxShape(image_id, 128 * 1024 * 1024, 1000))
    try:
        yield driver, made
    finally:
        await driver.destroy(made)
        await driver.close()


async def connect(sandbox: Sandbox) -> RuntimeConnection:
    connection = RuntimeConnection(sandbox.socket_path)
    await connection.wait_ready(30)
    return connection


async def test_protocol_v1_answers_once_with_the_log_capped_as_the_python_runtime_caps_it(
    sandbox: tuple[DockerDriver, Sandbox],
) -> None:
    driver, made = sandbox
    source = HELLO.replace(
        "return {", "for (let i = 0; i < 300; i += 1) console.log(`line ${i} ✓`);\n  return {"
    )
    filled = await driver.fill_code(
        made, zipped({"index.js": 'console.log("importing");\n' + source})
    )
    connection = await connect(made)
    health = await connection.health()
    assert health == {
        "protocol": 1,
        "protocols": [1, 2],
        "initialized": False,
        "features": ["code_dir"],
    }
    init = await connection.init(filled.code, "index.main", {"GREETING": "hi"}, 2000, protocol=1)
    assert (init.ok, init.protocol, init.logs) == (True, 1, "importing\n")
    reply = await connection.run({"input": {"name": "v1"}, "execution_id": "e-1"})
    assert reply["result"] == {"greeting": "hello v1"}
    whole = (
        "hello from console.log\nhello from stdout.write\nhello from fd 1\nhello from a child\n"
        "hello from stderr\n" + "".join(f"line {i} ✓\n" for i in range(300))
    ).encode()
    assert reply["logs"] == fit_log(whole, b"", 0, 2000)
    assert "[spinlet: log truncated, " in reply["logs"]
    assert (await connection.health())["initialized"] is True
    with pytest.raises(RuntimeBackendError, match="409"):
        await connection.init(filled.code, "index.main", {}, 2000)
    await connection.close()


async def test_a_zip_or_a_dependency_layer_is_refused_at_init(
    sandbox: tuple[DockerDriver, Sandbox],
) -> None:
    _, made = sandbox
    connection = await connect(made)
    init = await connection.init(zipped({"index.js": HELLO}), "index.main", {}, 1000)
    assert init.error is not None and init.error["type"] == "InvalidPackage"
    assert "code_dir" in init.error["message"]
    await connection.close()


async def test_a_layer_dir_is_refused_at_init_as_an_invalid_layer(
    sandbox: tuple[DockerDriver, Sandbox],
) -> None:
    driver, made = sandbox
    filled = await driver.fill_code(made, zipped({"index.js": HELLO}))
    connection = await connect(made)
    init = await connection.init(
        filled.code, "index.main", {}, 1000, layer_dir="/var/spinlet/layer"
    )
    assert init.error is not None and init.error["type"] == "InvalidLayer"
    assert "node_modules" in init.error["message"]
    await connection.close()


async def test_the_hello_node_example_runs(node_target: Target, backend: PoolBackend) -> None:
    example = FUNCTIONS / "hello-node"
    package = zipped({path.name: path.read_text() for path in example.iterdir()})
    spec, _ = node_spec(node_target, "", package_hash=package_hash(package))
    outcome = await execute(backend, spec, package, {"name": "Ada"})
    assert outcome.status is OutcomeStatus.SUCCESS, outcome
    assert outcome.result["greeting"] == "hello Ada"
    assert outcome.result["node"].startswith("v20.")
    assert outcome.logs == "hello Ada from node-function v1\n"
