"""A runtime that speaks another version of the runtime protocol (an image of another release)
is refused at `/init`, with an error saying so, and nothing runs on it."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.errors import RuntimeBackendError, RuntimeProtocolMismatch
from spinlet.paths import runtimes_dir
from spinlet.runtime import process_driver
from spinlet.runtime.backend import RunRequest
from spinlet.runtime.pool import PoolBackend
from spinlet.runtime.process_driver import ProcessDriver
from spinlet.runtime.protocol import MAX_PROTOCOL, PROTOCOL_VERSION
from spinlet.settings import Settings
from tests.helpers import make_package
from tests.integration.runtime.backends import COUNTER, Target, execute


def fake_runtime(directory: Path, protocol: object, features: tuple[str, ...] = ()) -> Path:
    """The real runtime server, answering with `protocol` as its version and announcing
    `features` (none: a server of before code directories)."""
    directory.mkdir(exist_ok=True)
    script = directory / "fake_server.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(runtimes_dir() / "python")!r})
            import server
            server.PROTOCOL = {protocol!r}
            server.agreed_protocol = lambda asked: {protocol!r}
            server.FEATURES = {features!r}
            server.main()
            """
        )
    )
    return script


@pytest.mark.parametrize("protocol", [MAX_PROTOCOL + 1, PROTOCOL_VERSION - 1, None])
async def test_a_runtime_of_another_protocol_version_is_refused_at_init(
    socket_root: Path, tmp_path: Path, protocol: object
) -> None:
    target = Target(
        "process", f"test-{uuid.uuid4().hex[:8]}", socket_root, "spinlet/runtime-python3:1"
    )
    driver = ProcessDriver(socket_root, node_id=target.node_id)
    driver.server = fake_runtime(tmp_path, protocol)
    backend = PoolBackend(driver, stem_cells=0)
    await backend.open()
    try:
        spec, package = target.spec(COUNTER)
        with pytest.raises(RuntimeProtocolMismatch) as raised:
            await execute(backend, spec, package)
    finally:
        await backend.close()
    assert isinstance(raised.value, RuntimeBackendError)  # a platform fault: execution `error`
    said = "names no protocol version" if protocol is None else f"speaks protocol {protocol}"
    assert raised.value.message.startswith(
        f"the runtime {said}, this node speaks protocol {MAX_PROTOCOL}: rebuild"
    )
    assert await target.leftovers() == []  # the sandbox that answered so is gone


async def test_a_runtime_without_code_directories_is_sent_the_zip(
    socket_root: Path, tmp_path: Path
) -> None:
    """An image of protocol v1 that does not announce `code_dir` (an admin's own) still runs
    functions: it gets the package itself and extracts it under its own `$TMPDIR`."""
    target = Target(
        "process", f"test-{uuid.uuid4().hex[:8]}", socket_root, "spinlet/runtime-python3:1"
    )
    driver = ProcessDriver(socket_root, node_id=target.node_id)
    driver.server = fake_runtime(tmp_path, PROTOCOL_VERSION)
    source = "import os\ndef main(event):\n    return os.path.dirname(__file__)\n"
    backend = PoolBackend(driver, stem_cells=0)
    await backend.open()
    try:
        outcome = await execute(backend, *target.spec(source))
        [name] = target.code_dirs()
        assert list((socket_root / "code" / name).iterdir()) == []  # not filled
    finally:
        await backend.close()
    assert outcome.result.startswith(str(socket_root / name / "tmp" / "spinlet-code-"))
    assert await target.leftovers() == [] and target.code_dirs() == []


@pytest.mark.parametrize("features", [(), ("code_dir",)])
async def test_a_runtime_without_layer_directories_is_refused_for_a_function_with_a_layer(
    socket_root: Path, tmp_path: Path, features: tuple[str, ...]
) -> None:
    """An image of before dependency layers cannot run a function that has one: the execution
    fails saying so (not with an import error of the function's), and nothing runs on it."""
    target = Target(
        "process", f"test-{uuid.uuid4().hex[:8]}", socket_root, "spinlet/runtime-python3:1"
    )
    driver = ProcessDriver(socket_root, node_id=target.node_id)
    driver.server = fake_runtime(tmp_path, PROTOCOL_VERSION, features)
    spec, package = target.spec(COUNTER, layer_id="a" * 64)

    async def load_code() -> bytes:
        return package

    async def load_layer() -> Path:
        return tmp_path

    backend = PoolBackend(driver, stem_cells=0)
    await backend.open()
    try:
        request = RunRequest(execution_id=str(uuid.uuid4()), input=None)
        with pytest.raises(RuntimeBackendError) as raised:
            await backend.execute(spec, load_code, request, load_layer)
    finally:
        await backend.close()
    assert raised.value.message == (
        "the runtime image 'spinlet/runtime-python3:1' cannot load dependency layers (its "
        "runtime does not announce the 'layer_dir' feature): rebuild it (spinlet runtimes "
        "build --rebuild), or run the function without requirements"
    )
    assert await target.leftovers() == [] and target.code_dirs() == []


async def test_an_execution_on_it_ends_in_error_saying_why(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_runtime(tmp_path / "python", MAX_PROTOCOL + 1).rename(tmp_path / "python/server.py")
    monkeypatch.setattr(process_driver, "runtimes_dir", lambda: tmp_path)
    api = await aiohttp_client(create_app(settings.evolve(backend="process")))
    upload = aiohttp.FormData({"name": "counter"})
    upload.add_field("package", make_package(COUNTER), filename="counter.zip")
    assert (await api.post("/v1/functions", data=upload)).status == 201
    response = await api.post("/v1/functions/counter/invoke", json={})
    assert response.status == 502
    body = await response.json()
    assert body["status"] == "error"  # the platform's fault, not the function's
    assert body["status_reason"] == "protocol_mismatch"
    assert body["error"]["type"] == "RuntimeProtocolMismatch"
    assert f"speaks protocol {MAX_PROTOCOL + 1}" in body["faultstring"]
