"""Dependencies end to end through the API: requirements resolved into a layer in the
background, compiled wheels imported by the function, shared builds, errors a user can read,
waiting while it builds, versions that pin the set, and other nodes that fetch, never resolve.

pip resolves against the session's local wheelhouse (`tests/wheels.py`, `offline_pip`),
configured the way the README tells an air-gapped fleet to: pip's own `PIP_NO_INDEX` and
`PIP_FIND_LINKS`.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.keys import SERVICES
from spinlet.settings import Settings
from tests.helpers import eventually
from tests.integration.conftest import ApiFactory

CODE = """
import orjson
import yaml


def main(event, context):
    document = yaml.load(event["yaml"], Loader=yaml.CLoader)
    return {
        "json": orjson.dumps(document).decode(),
        "loader": yaml.CLoader.__name__,
        "yaml_file": yaml.__file__,
    }
"""
REQUIREMENTS = "PyYAML>=6\norjson\n"
#: Building from the local wheelhouse takes seconds; this leaves room for a loaded machine.
BUILD_WITHIN = 120.0


def package(code: str = CODE, requirements: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", code)
        if requirements is not None:
            archive.writestr("requirements.txt", requirements)
    return buffer.getvalue()


async def create(
    api: TestClient[Any, Any], name: str, data: bytes | None = None, **fields: Any
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("name", name)
    for key, value in fields.items():
        form.add_field(key, str(value))
    form.add_field("package", data or package(), filename="main.zip")
    response = await api.post("/v1/functions", data=form)
    return response.status, await response.json()


async def built(api: TestClient[Any, Any], name: str) -> dict[str, Any]:
    """The function once it is no longer `building`."""
    record: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal record
        record = await (await api.get(f"/v1/functions/{name}")).json()
        return bool(record["status"] != "building")

    await eventually(done, within=BUILD_WITHIN, interval=0.2)
    return record


async def invoke(api: TestClient[Any, Any], name: str, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/executions", json={"function_id": name, **body})
    assert response.status in (201, 202), await response.text()
    record: dict[str, Any] = await response.json()
    return record


@pytest.mark.usefixtures("offline_pip")
async def test_requirements_become_a_layer_whose_compiled_wheels_load(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory()
    status, record = await create(api, "yamljson", requirements=REQUIREMENTS)
    assert status == 201, record
    assert record["status"] == "building"
    assert record["requirements"] == "PyYAML>=6\norjson"
    record = await built(api, "yamljson")
    assert record["status"] == "available", record
    names = [pin.split("==")[0] for pin in record["dependencies"]]
    assert names == ["orjson", "pyyaml"]
    assert all("==" in pin for pin in record["dependencies"])

    execution = await invoke(api, "yamljson", input={"yaml": "a: [1, 2]"})
    assert execution["status"] == "success", execution
    result = execution["result"]
    assert result["json"] == '{"a":[1,2]}'
    assert result["loader"] == "CLoader"  # libyaml's C extension, from a compiled wheel
    if api.server.app[SERVICES].backend.driver.name == "docker":
        assert result["yaml_file"].startswith("/var/spinlet/layer/")


@pytest.mark.usefixtures("offline_pip")
async def test_a_packages_own_requirements_txt_is_used_and_can_be_removed(
    process_api: TestClient[Any, Any],
) -> None:
    api = process_api
    status, record = await create(api, "own", package(requirements="# ours\npyyaml\norjson\n"))
    assert status == 201, record
    assert record["requirements"] == "pyyaml\norjson"
    assert (await built(api, "own"))["status"] == "available"
    assert (await invoke(api, "own", input={"yaml": "[1]"}))["status"] == "success"

    response = await api.put("/v1/functions/own", json={"requirements": ""})
    record = await response.json()
    assert response.status == 200, record
    assert (record["status"], record["requirements"], record["dependencies"]) == (
        "available",
        None,
        [],
    )
    execution = await invoke(api, "own", input={"yaml": "[1]"})
    assert execution["status"] == "failed"
    assert execution["error"]["type"] == "ModuleNotFoundError"


@pytest.mark.usefixtures("offline_pip")
async def test_functions_with_the_same_requirements_share_one_build(
    process_api: TestClient[Any, Any],
) -> None:
    api = process_api
    assert (await create(api, "first", requirements=REQUIREMENTS))[0] == 201
    assert (await create(api, "second", requirements=REQUIREMENTS))[0] == 201
    first, second = await built(api, "first"), await built(api, "second")
    assert first["status"] == second["status"] == "available"
    assert first["dependencies"] == second["dependencies"]
    store = api.server.app[SERVICES].store
    one = await store.functions.get("default", "first")
    two = await store.functions.get("default", "second")
    assert one.build_key == two.build_key and one.layer_id == two.layer_id
    build = await store.layers.find_build(one.build_key)
    assert build is not None and build.attempts == 1  # resolved once, for both

    # A third, created once the build is available, is available at once.
    status, third = await create(api, "third", requirements=REQUIREMENTS)
    assert (status, third["status"], third["dependencies"]) == (
        201,
        "available",
        first["dependencies"],
    )


@pytest.mark.parametrize(
    "line",
    [
        "-e ./lib",
        "-r other.txt",
        "--index-url http://10.0.0.1/simple",
        "--extra-index-url=http://10.0.0.1/simple",
        "-f /srv/wheels",
        "pyyaml @ https://example.invalid/PyYAML-6.0-py3-none-any.whl",
        "https://example.invalid/PyYAML-6.0-py3-none-any.whl",
        "./local.whl",
        "/tmp/x.whl",
        "pyyaml >=>= 6",
    ],
)
async def test_a_line_that_is_not_a_named_requirement_is_refused(
    process_api: TestClient[Any, Any], line: str
) -> None:
    api = process_api
    status, body = await create(api, "refused", requirements=f"pyyaml\n{line}\n")
    assert status == 400, body
    assert body["error"]["code"] == "invalid_requirements"
    assert "line 2" in body["error"]["message"] and line.strip() in body["error"]["message"]
    assert (await api.get("/v1/functions/refused")).status == 404


@pytest.mark.usefixtures("offline_pip")
async def test_an_unknown_package_is_an_error_in_pips_words(
    process_api: TestClient[Any, Any],
) -> None:
    api = process_api
    status, record = await create(api, "broken", requirements="no-such-package-here==1.0\n")
    assert status == 201, record
    record = await built(api, "broken")
    assert record["status"] == "error"
    assert "no-such-package-here" in record["status_message"]
    assert "No matching distribution" in record["status_message"]

    response = await api.post("/v1/functions/broken/invoke", json={})
    body = await response.json()
    assert response.status == 409, body
    assert body["error"]["code"] == "function_not_ready"
    assert "No matching distribution" in body["error"]["message"]
    response = await api.post("/v1/functions/broken/versions", json={})
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "function_not_ready"


async def test_an_unreachable_index_is_said_so_and_rebuild_resolves_again(
    process_api: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch, wheelhouse: Path
) -> None:
    api = process_api
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    # Nothing listens on port 9; the password must never reach the user.
    monkeypatch.setenv("PIP_INDEX_URL", "http://builder:s3cr3tpw@127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    assert (await create(api, "offline", requirements="pyyaml\n"))[0] == 201
    record = await built(api, "offline")
    assert record["status"] == "error"
    assert "could not be reached" in record["status_message"]
    assert "s3cr3tpw" not in record["status_message"]

    monkeypatch.delenv("PIP_INDEX_URL")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    response = await api.post("/v1/functions/offline/rebuild")
    assert response.status == 202
    assert (await response.json())["status"] == "building"
    record = await built(api, "offline")
    assert record["status"] == "available", record
    assert [pin.split("==")[0] for pin in record["dependencies"]] == ["pyyaml"]


@pytest.mark.usefixtures("offline_pip")
async def test_while_it_builds_sync_calls_wait_async_ones_stay_queued_and_publish_is_409(
    process_api: TestClient[Any, Any],
) -> None:
    api = process_api
    services = api.server.app[SERVICES]
    await services.layers.stop()  # this node builds nothing until told to
    status, record = await create(api, "slow", requirements=REQUIREMENTS, timeout=1)
    assert (status, record["status"]) == (201, "building")

    queued = await invoke(api, "slow", input={"yaml": "x: 1"}, sync=False)
    response = await api.post("/v1/functions/slow/versions", json={})
    assert response.status == 409
    assert "being built" in (await response.json())["error"]["message"]
    # A sync call waits for the layer within the function's timeout (1 s), then says why.
    waited = await invoke(api, "slow", input={"yaml": "x: 1"})
    assert (waited["status"], waited["status_reason"]) == ("error", "dependencies")
    assert "still being built" in waited["error"]["message"]
    again = await (await api.get(f"/v1/executions/{queued['id']}")).json()
    assert again["status"] == "queued"  # passed over while its function builds

    services.layers.start()
    assert (await built(api, "slow"))["status"] == "available"
    done = await (await api.get(f"/v1/executions/{queued['id']}?wait=60")).json()
    assert done["status"] == "success", done
    assert done["result"]["json"] == '{"x":1}'


@pytest.mark.usefixtures("offline_pip")
async def test_a_build_whose_node_died_is_taken_over(
    process_api: TestClient[Any, Any],
) -> None:
    api = process_api
    services = api.server.app[SERVICES]
    await services.layers.stop()
    assert (await create(api, "orphan", requirements="pyyaml\n"))[0] == 201
    # Another node claims it and dies: its lease (1 s) lapses.
    taken = await services.store.layers.claim_build("a-node-that-died", 1.0)
    assert taken is not None
    services.layers.start()
    record = await built(api, "orphan")
    assert record["status"] == "available", record
    build = await services.store.layers.find_build(taken.key)
    assert build is not None and build.attempts == 2 and build.owner != "a-node-that-died"


@pytest.mark.usefixtures("offline_pip")
async def test_a_version_pins_the_exact_set(process_api: TestClient[Any, Any]) -> None:
    api = process_api
    assert (await create(api, "pinned", requirements=REQUIREMENTS))[0] == 201
    pins = (await built(api, "pinned"))["dependencies"]
    response = await api.post("/v1/functions/pinned/versions", json={})
    version = await response.json()
    assert response.status == 201, version
    assert version["dependencies"] == pins

    # The function moves on to fewer dependencies; version 1 keeps its own.
    response = await api.put("/v1/functions/pinned", json={"requirements": "pyyaml"})
    assert (await response.json())["status"] == "building"
    record = await built(api, "pinned")
    assert [pin.split("==")[0] for pin in record["dependencies"]] == ["pyyaml"]
    current = await invoke(api, "pinned", input={"yaml": "a: 1"})
    assert current["error"]["type"] == "ModuleNotFoundError"  # no orjson any more
    old = await invoke(api, "pinned", input={"yaml": "a: 1"}, function_version=1)
    assert old["status"] == "success", old
    response = await api.post("/v1/functions/pinned/versions", json={})
    assert response.status == 201  # another set: another version
    assert (await response.json())["config_hash"] != version["config_hash"]


@pytest.mark.usefixtures("offline_pip")
async def test_a_layer_over_the_size_limit_is_an_error_naming_it(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(max_layer_size=64 * 1024)
    assert (await create(api, "huge", requirements=REQUIREMENTS))[0] == 201
    record = await built(api, "huge")
    assert record["status"] == "error"
    assert "SPINLET_MAX_LAYER_SIZE" in record["status_message"]


@pytest.mark.postgres
@pytest.mark.usefixtures("offline_pip")
async def test_another_node_runs_the_layer_without_resolving_and_so_does_a_restart(
    aiohttp_client: Any, settings: Settings, tmp_path: Path, fresh_postgres: str
) -> None:
    """A fleet: two nodes on one PostgreSQL database, each with a data dir of its own."""
    from spinlet.api.app import create_app

    settings = settings.evolve(backend="process", database_url=fresh_postgres)
    first = await aiohttp_client(create_app(settings))
    assert (await create(first, "shared", requirements=REQUIREMENTS))[0] == 201
    record = await built(first, "shared")
    assert record["status"] == "available"
    store = first.server.app[SERVICES].store
    function = await store.functions.get("default", "shared")
    await first.close()

    # Another node on the same database, with a data dir of its own: it fetches the layer.
    other = settings.evolve(node_id="other-node", data_dir=tmp_path / "other")
    second = await aiohttp_client(create_app(other))
    execution = await invoke(second, "shared", input={"yaml": "b: [true]"})
    assert execution["status"] == "success", execution
    assert execution["node_id"] == "other-node"
    assert (other.code_root("other-node") / "layers" / str(function.layer_id)).is_dir()
    assert not (other.builds_dir.exists() and any(other.builds_dir.iterdir()))
    build = await second.server.app[SERVICES].store.layers.find_build(str(function.build_key))
    assert build is not None and build.attempts == 1  # resolved once, on the first node
    await second.close()

    # The first node again, after a restart (its cache emptied): it runs it as well.
    layers = settings.code_root(settings.resolve_node_id()) / "layers"
    for cached in layers.iterdir() if layers.is_dir() else ():
        if cached.is_dir():
            shutil.rmtree(cached)
    again = await aiohttp_client(create_app(settings))
    execution = await invoke(again, "shared", input={"yaml": "c: null"})
    assert execution["status"] == "success", execution
    assert execution["result"]["json"] == '{"c":null}'
