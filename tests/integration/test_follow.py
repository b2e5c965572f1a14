"""Following an execution's log as it runs: `GET /v1/executions/{id}/log?follow=true`.

Functions run as local processes. A followed function prints, then waits on a FIFO the test
made (opening it for reading blocks until the test opens it for writing), so the test reads
the first line while the execution is still running, and only then lets it end: the order of
events proves the line came live, with no timer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet.api.app import create_app
from spinlet.api.keys import SERVICES
from spinlet.domain import Role
from spinlet.settings import Settings
from tests.helpers import eventually, make_package

Client = TestClient[Any, Any]

#: Prints a line, waits for the test to open the FIFO `gate`, prints another and returns.
GATED = """
import sys

def main(event, context):
    print("first line", flush=True)
    with open(event["gate"]) as gate:
        gate.read()
    print("out line", flush=True)
    print("err line", file=sys.stderr, flush=True)
    return "done"
"""

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> Client:
    return await aiohttp_client(create_app(settings.evolve(backend="process")))


async def deploy(api: Client, name: str = "gated", source: str = GATED) -> None:
    """A function the test gates: its timeout far beyond what any test takes, even on a loaded
    machine (the tests go by order of events, and a timeout would end it early)."""
    form = aiohttp.FormData()
    form.add_field("name", name)
    form.add_field("timeout", "600")
    form.add_field("package", make_package(source), filename="main.zip")
    response = await api.post("/v1/functions", data=form)
    assert response.status == 201, await response.text()


def gate(tmp_path: Path) -> Path:
    path = tmp_path / f"gate-{uuid.uuid4().hex[:8]}"
    os.mkfifo(path)
    return path


async def release(path: Path) -> None:
    """Let the function waiting on the FIFO go on."""

    def write() -> None:
        fd = os.open(path, os.O_WRONLY)  # returns once the function has it open for reading
        os.write(fd, b"go")
        os.close(fd)

    await asyncio.to_thread(write)


async def start(api: Client, gate_path: Path, name: str = "gated") -> str:
    body = {"function_id": name, "input": {"gate": str(gate_path)}, "sync": False}
    response = await api.post("/v1/executions", json=body)
    assert response.status == 202, await response.text()
    execution_id: str = (await response.json())["id"]
    return execution_id


async def start_gated(api: Client, tmp_path: Path) -> tuple[str, Path]:
    """A running execution of `GATED`, and the FIFO that lets it end."""
    await deploy(api)
    fifo = gate(tmp_path)
    return await start(api, fifo), fifo


async def read_until(response: aiohttp.ClientResponse, wanted: str) -> str:
    """What the response sent until `wanted` was in it (fails if it ends before)."""
    seen = b""
    while wanted.encode() not in seen:
        chunk = await response.content.readany()
        assert chunk, f"the response ended before {wanted!r}: {seen!r}"
        seen += chunk
    return seen.decode()


async def log_events_until(response: aiohttp.ClientResponse, wanted: str) -> list[dict[str, str]]:
    """The `log` events the response sent until their text was `wanted` (a print may come as
    several writes, so as several events)."""
    seen = ""
    while True:
        seen += await read_until(response, "\n\n")
        if seen.endswith("\n\n") and "".join(e["data"] for e in events(seen)) == wanted:
            return events(seen)


def events(text: str) -> list[dict[str, str]]:
    """Server-Sent Events as the specification reads them (data lines joined by newlines)."""
    parsed = []
    for block in text.strip("\n").split("\n\n"):
        event: dict[str, Any] = {"data": []}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "data":
                event["data"].append(value)
            else:
                event[field] = value
        parsed.append({**event, "data": "\n".join(event["data"])})
    return parsed


async def status_of(api: Client, execution_id: str) -> str:
    record = await (await api.get(f"/v1/executions/{execution_id}")).json()
    status: str = record["status"]
    return status


async def test_a_follower_reads_the_first_line_while_it_runs_then_the_rest(
    api: Client, tmp_path: Path
) -> None:
    execution_id, fifo = await start_gated(api, tmp_path)
    response = await api.get(f"/v1/executions/{execution_id}/log?follow=true")
    assert response.status == 200 and response.content_type == "text/plain"
    assert await read_until(response, "first line\n") == "first line\n"
    # It waits for the gate, which only opens now that the follower has the line.
    assert await status_of(api, execution_id) == "running"
    await release(fifo)
    rest = (await response.content.read()).decode()  # to the end: the execution ended
    assert rest.splitlines() == ["out line", "err line"] or rest.splitlines() == [
        "err line",
        "out line",
    ]
    assert await status_of(api, execution_id) == "success"
    stored = await (await api.get(f"/v1/executions/{execution_id}/log")).text()
    assert sorted(stored.splitlines()) == sorted(("first line\n" + rest).splitlines())


async def test_server_sent_events_carry_offsets_resume_without_replay_and_end(
    api: Client, tmp_path: Path
) -> None:
    execution_id, fifo = await start_gated(api, tmp_path)
    url = f"/v1/executions/{execution_id}/log?follow=true"
    sse = {"Accept": "text/event-stream"}
    response = await api.get(url, headers=sse)
    assert response.content_type == "text/event-stream"
    first = await log_events_until(response, "first line\n")
    assert {e["event"] for e in first} == {"log"} and first[-1]["id"] == "11"
    await release(fifo)
    rest = events((await response.content.read()).decode())
    assert rest[-1]["event"] == "end" and rest[-1]["id"] == "end"
    assert json.loads(rest[-1]["data"]) == {"status": "success", "status_reason": None}
    logged = "".join(event["data"] for event in rest[:-1])
    assert sorted(logged.splitlines()) == ["err line", "out line"]
    assert rest[-2]["id"] == str(len(("first line\n" + logged).encode()))

    # A browser reconnecting after the first event gets the rest only, then the end again.
    again = await api.get(url, headers={**sse, "Last-Event-ID": first[-1]["id"]})
    resumed = events(await again.text())
    assert "".join(event["data"] for event in resumed[:-1]) == logged
    assert resumed[-1]["event"] == "end"
    # After the end event, a reconnect is told there is nothing more (204: it stops).
    ended = await api.get(url, headers={**sse, "Last-Event-ID": "end"})
    assert ended.status == 204


async def test_following_a_finished_execution_sends_its_log_and_ends(api: Client) -> None:
    await deploy(api, "hello", 'def main(event, context):\n    print("hi there")\n    return 1\n')
    response = await api.post("/v1/executions", json={"function_id": "hello"})
    execution = await response.json()
    url = f"/v1/executions/{execution['id']}/log?follow=true"
    assert await (await api.get(url)).text() == "hi there\n"
    sse = events(await (await api.get(url, headers={"Accept": "text/event-stream"})).text())
    assert sse == [
        {"event": "log", "id": "9", "data": "hi there\n"},
        {"event": "end", "id": "end", "data": '{"status": "success", "status_reason": null}'},
    ]
    # Its lines were stored without their times: the start time, and no stream.
    stamped = await (await api.get(url + "&timestamps=true")).text()
    started = execution["started_at"]
    assert re.fullmatch(rf"({STAMP}) - hi there\n", stamped)
    assert stamped[:19] == started[:19]
    # Without follow (or with follow=false) the log is as it always was.
    assert await (await api.get(url.replace("true", "false"))).text() == "hi there\n"


async def test_timestamps_prefix_each_line_with_its_time_and_stream(
    api: Client, tmp_path: Path
) -> None:
    execution_id, fifo = await start_gated(api, tmp_path)
    response = await api.get(f"/v1/executions/{execution_id}/log?follow=true&timestamps=true")
    first = await read_until(response, "first line\n")
    assert re.fullmatch(rf"{STAMP} (stdout|-) first line\n", first)
    await release(fifo)
    rest = (await response.content.read()).decode().splitlines()
    assert sorted(re.sub(STAMP, "T", line) for line in rest) == [
        "T stderr err line",
        "T stdout out line",
    ]


async def test_an_unknown_or_another_projects_execution_is_not_found(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings
) -> None:
    api = await aiohttp_client(create_app(settings.evolve(backend="process", auth="on")))
    tokens = api.server.app[SERVICES].tokens
    _, owner = await tokens.create("alpha", Role.MEMBER)
    _, intruder = await tokens.create("beta", Role.MEMBER)
    form = aiohttp.FormData()
    form.add_field("name", "mine")
    form.add_field("package", make_package("def main(event):\n    print(1)\n"), filename="m.zip")
    auth = {"Authorization": f"Bearer {owner}"}
    assert (await api.post("/v1/functions", data=form, headers=auth)).status == 201
    execution = await (
        await api.post("/v1/executions", json={"function_id": "mine"}, headers=auth)
    ).json()
    for who, execution_id in ((owner, str(uuid.uuid4())), (intruder, execution["id"])):
        for accept in ("text/plain", "text/event-stream"):
            response = await api.get(
                f"/v1/executions/{execution_id}/log?follow=true",
                headers={"Authorization": f"Bearer {who}", "Accept": accept},
            )
            assert response.status == 404, await response.text()
            assert (await response.json())["error"]["code"] == "not_found"


async def test_a_follower_on_another_node_of_a_fleet_reads_the_first_line_while_it_runs(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]],
    settings: Settings,
    tmp_path: Path,
    fresh_postgres: str,
) -> None:
    """Two nodes on one PostgreSQL database: the first runs it, the second is followed."""
    settings = settings.evolve(backend="process", database_url=fresh_postgres)
    first = await aiohttp_client(create_app(settings))
    other = settings.evolve(node_id="other-node", data_dir=tmp_path / "other")
    second = await aiohttp_client(create_app(other))
    await deploy(first)
    fifo = gate(tmp_path)
    execution_id = str(uuid.uuid4())
    body = {"id": execution_id, "function_id": "gated", "input": {"gate": str(fifo)}}
    running = asyncio.create_task(first.post("/v1/executions", json=body))  # sync: runs here

    async def follow() -> aiohttp.ClientResponse:
        while True:  # once the first node recorded it
            response = await second.get(
                f"/v1/executions/{execution_id}/log?follow=true",
                headers={"Accept": "text/event-stream"},
            )
            if response.status != 404:
                return response
            await asyncio.sleep(0.05)

    response = await follow()
    assert response.status == 200
    first = await log_events_until(response, "first line\n")
    assert first[-1]["id"] == "11"
    record = await (await second.get(f"/v1/executions/{execution_id}")).json()
    assert record["status"] == "running" and record["node_id"] != "other-node"
    await release(fifo)
    rest = events((await response.content.read()).decode())
    assert sorted("".join(e["data"] for e in rest[:-1]).splitlines()) == ["err line", "out line"]
    assert json.loads(rest[-1]["data"])["status"] == "success"
    assert (await running).status == 201


async def test_past_the_log_cap_a_follower_gets_a_marker_then_the_tail(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings, tmp_path: Path
) -> None:
    api = await aiohttp_client(create_app(settings.evolve(backend="process", log_limit=1000)))
    chatty = GATED.replace('print("out line", flush=True)', LINES)
    await deploy(api, "chatty", chatty)
    fifo = gate(tmp_path)
    execution_id = await start(api, fifo, "chatty")
    url = f"/v1/executions/{execution_id}/log?follow=true"
    response = await api.get(url, headers={"Accept": "text/event-stream"})
    first = await log_events_until(response, "first line\n")
    await release(fifo)
    rest = events((await response.content.read()).decode())
    followed = "".join(e["data"] for e in first + rest[:-1])
    written = "first line\n" + "".join(f"line {n:03}\n" for n in range(200)) + "err line\n"
    assert rest[-2]["id"] == str(len(written))  # offsets count every byte written
    seen_live, marker, tail = re.split(
        r"(\n\[spinlet: log truncated, \d+ bytes dropped\]\n)", followed
    )
    assert written.startswith(seen_live) and 1000 <= len(seen_live) < 1100  # the cap, live
    stored = await (await api.get(url.replace("true", "false"))).text()
    assert stored.endswith(tail) and written.endswith(tail)
    dropped = int(re.findall(r"\d+", marker)[0])
    assert len(seen_live) + dropped + len(tail) == len(written)


LINES = 'for n in range(200):\n        print(f"line {n:03}", flush=True)'


async def test_a_follower_that_hangs_up_is_let_go_while_it_runs(
    api: Client, tmp_path: Path
) -> None:
    execution_id, fifo = await start_gated(api, tmp_path)
    response = await api.get(f"/v1/executions/{execution_id}/log?follow=true")
    await read_until(response, "first line\n")
    live = api.server.app[SERVICES].runner.live.get(execution_id)
    assert live is not None and len(live.followers) == 1
    response.close()

    async def let_go() -> bool:
        return not live.followers

    await eventually(let_go)
    await release(fifo)


#: Writes a 64 KiB block of numbered 1 KiB lines for each `+` read from the FIFO `gate`, and
#: returns at anything else: the test decides how much is written, and when.
FLOOD = """
import sys

def main(event, context):
    n = 0
    with open(event["gate"], "rb", buffering=0) as gate:
        while gate.read(1) == b"+":
            sys.stdout.write("".join(f"{i:07} ".ljust(1023, ".") + "\\n" for i in range(n, n + 64)))
            sys.stdout.flush()
            n += 64
    return n
"""


#: What `FLOOD` writes for `blocks` `+`.
def flooded(blocks: int) -> str:
    return "".join(f"{i:07} ".ljust(1023, ".") + "\n" for i in range(blocks * 64))


BLOCK = 64 * 1024
#: More than the follower bound (256 KiB) plus what the sockets between the node and a client
#: that reads nothing can hold (kernel buffers of a few MiB on loopback).
FLOOD_BLOCKS = 384


async def read_bytes(response: aiohttp.ClientResponse, size: int, seen: bytearray) -> None:
    """Read the response until `seen` holds `size` bytes."""
    while len(seen) < size:
        chunk = await response.content.readany()
        assert chunk, f"the response ended at byte {len(seen)} of {size}"
        seen += chunk


async def events_to(response: aiohttp.ClientResponse, event_id: str) -> list[dict[str, str]]:
    """The events the response sent up to the one whose id is `event_id` (a long stream: read
    as it comes, parsed once)."""
    marker = f"\nid: {event_id}\n".encode()
    seen = bytearray()
    found = -1
    while True:
        chunk = await response.content.readany()
        assert chunk, f"the response ended before the event {event_id}"
        start = max(0, len(seen) - len(marker))
        seen += chunk
        if found < 0:
            found = seen.find(marker, start)
        if found >= 0 and (end := seen.find(b"\n\n", found)) >= 0:
            return events(seen[: end + 2].decode())


async def test_a_slow_follower_is_dropped_and_resumes_from_its_offset(
    aiohttp_client: Callable[..., Coroutine[Any, Any, Client]], settings: Settings, tmp_path: Path
) -> None:
    api = await aiohttp_client(
        create_app(settings.evolve(backend="process", log_limit=64 * 1024 * 1024))
    )
    await deploy(api, "flood", FLOOD)
    fifo = gate(tmp_path)
    execution_id = await start(api, fifo, "flood")
    url = f"/v1/executions/{execution_id}/log?follow=true"
    sse = {"Accept": "text/event-stream"}
    slow = await api.get(url, headers=sse)  # never read while the function writes
    normal = await api.get(url)
    assert (slow.status, normal.status) == (200, 200)
    fd = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)  # once the function waits on it
    try:
        received = bytearray()
        for block in range(FLOOD_BLOCKS):  # the next block once the last one was read
            os.write(fd, b"+")
            await read_bytes(normal, (block + 1) * BLOCK, received)
        written = flooded(FLOOD_BLOCKS)
        assert received.decode() == written

        # The slow follower was let go: its response ends (no `end` event) while it still runs.
        async with asyncio.timeout(120):  # a hang guard only: it ends long before
            dropped = events((await slow.content.read()).decode())
        assert {e["event"] for e in dropped} == {"log"}, [e for e in dropped if e["event"] != "log"]
        assert await status_of(api, execution_id) == "running"
        got = "".join(e["data"] for e in dropped)
        assert 0 < len(got) < len(written) and written.startswith(got)
        assert dropped[-1]["id"] == str(len(got))

        # A reconnect with Last-Event-ID resumes at that offset, while it still runs.
        again = await api.get(url, headers={**sse, "Last-Event-ID": dropped[-1]["id"]})
        resumed = await events_to(again, str(len(written)))
        assert "".join(e["data"] for e in resumed) == written[len(got) :]
        assert await status_of(api, execution_id) == "running"
        os.write(fd, b".")  # now it ends
    finally:
        os.close(fd)
    end = events((await again.content.read()).decode())
    assert [e["event"] for e in end] == ["end"]
    assert json.loads(end[0]["data"])["status"] == "success"
    assert (await normal.content.read()) == b""  # the normal follower's log ended with it
    assert await (await api.get(url.replace("true", "false"))).text() == written
