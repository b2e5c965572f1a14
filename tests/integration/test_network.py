"""A function's network: none by default; with `network`, the outside world only — no other
container and no service of the host (the control plane among them) is reachable."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.runtime.docker_network import FUNCTION_BRIDGE, FUNCTION_NETWORK
from spinlet.settings import Settings
from tests.helpers import make_package
from tests.integration.test_api import form

Client = TestClient[Any, Any]

#: Reports its interfaces' routes and tries every (host, port) it is given.
PROBE = """
    import socket

    def main(event):
        with open("/proc/net/route") as routes:
            default_route = any(line.split()[1] == "00000000" for line in routes.readlines()[1:])
        reached = {}
        for host, port in event["targets"]:
            probe = socket.socket()
            probe.settimeout(2)
            try:
                probe.connect((host, port))
                reached[f"{host}:{port}"] = "connected"
            except OSError as exc:
                reached[f"{host}:{port}"] = type(exc).__name__
            finally:
                probe.close()
        return {"default_route": default_route, "reached": reached}
"""


@pytest.fixture
async def docker_api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    runtime_image_tag: str,
) -> Client:
    return await aiohttp_client(create_app(settings.evolve(backend="docker", stem_cells=0)))


@pytest.fixture
async def host_service() -> AsyncIterator[int]:
    """A TCP service of the host listening on every address (as a control plane on 0.0.0.0)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, host="0.0.0.0", port=0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def run_probe(api: Client, name: str, targets: list[tuple[str, int]]) -> dict[str, Any]:
    response = await api.post(
        "/v1/executions", json={"function_id": name, "input": {"targets": targets}}
    )
    record: dict[str, Any] = await response.json()
    assert record["status"] == "success", record
    result: dict[str, Any] = record["result"]
    return result


@pytest.mark.docker
async def test_a_function_with_network_reaches_no_container_and_not_the_host(
    docker_api: Client, docker_client: Any, runtime_image_tag: str, host_service: int
) -> None:
    api = docker_api
    source = make_package(PROBE)
    created = await api.post("/v1/functions", data=form("online", data=source, network="true"))
    assert created.status == 201 and (await created.json())["network"] is True
    await api.post("/v1/functions", data=form("offline", data=source))

    # The first run makes the functions' network; a peer on it serves TCP as a runtime might.
    first = await run_probe(api, "online", [])
    assert first["default_route"] is True  # it does have a network
    network = docker_client.networks.get(FUNCTION_NETWORK)
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    peer = docker_client.containers.run(
        runtime_image_tag,
        ["-m", "http.server", "8080"],
        entrypoint=["python3"],
        network=FUNCTION_NETWORK,
        detach=True,
        remove=True,
        labels={"spinlet.test": "network-peer"},
    )
    try:
        peer.reload()
        peer_ip = peer.attrs["NetworkSettings"]["Networks"][FUNCTION_NETWORK]["IPAddress"]
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        await wait_listening(peer_ip, 8080)  # the host reaches the peer: it does listen
        targets = [(peer_ip, 8080), (gateway, host_service), (gateway, api.port or 0)]
        online = await run_probe(api, "online", targets)
        assert online["reached"] == {f"{h}:{p}": "TimeoutError" for h, p in targets}, online
        offline = await run_probe(api, "offline", targets)
        assert offline["default_route"] is False
        assert set(offline["reached"].values()) <= {"OSError", "ConnectionRefusedError"}
        assert "connected" not in json.dumps(offline)
        # Nor does it reach a cloud's instance metadata (nothing answers there on this machine:
        # the rule that drops it is what is checked).
        rules = await asyncio.to_thread(
            subprocess.run, ["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True
        )
        assert f"-A DOCKER-USER -d 169.254.0.0/16 -i {FUNCTION_BRIDGE} -j DROP" in rules.stdout
    finally:
        peer.remove(force=True)


async def wait_listening(host: str, port: int) -> None:
    for _ in range(100):
        try:
            connection = await asyncio.to_thread(socket.create_connection, (host, port), 0.5)
            connection.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


async def test_network_is_off_unless_asked_and_is_part_of_a_version(process_api: Client) -> None:
    api = process_api
    created = await api.post("/v1/functions", data=form("fn", data=make_package(PROBE)))
    assert (await created.json())["network"] is False
    first = await (await api.post("/v1/functions/fn/versions")).json()
    changed = await api.put("/v1/functions/fn", json={"network": True})
    assert (await changed.json())["network"] is True
    second = await api.post("/v1/functions/fn/versions")
    assert second.status == 201  # a change of network is a change of configuration
    assert [first["network"], (await second.json())["network"]] == [False, True]
    refused = await api.put("/v1/functions/fn", json={"network": "maybe"})
    assert refused.status == 400
