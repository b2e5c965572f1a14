"""`spinlet bench`: Spinlet against the floor and the naive way, measured in one run.

(a) the floor: a direct HTTP call to a warm runtime container over its socket;
(b) the naive way: `docker run` per call;
(c) Spinlet sync executions through the public API, recorded durably: latency at
    concurrency 1, throughput at higher concurrency;
(d) the first call of a never-run function, with a stem cell ready and without;
(e) with `--requirements`: the same with a dependency layer (its build once, warm calls, and
    first calls of new functions sharing the built layer, with a stem cell made before they
    existed);
(f) ratios of (c), (d) and (e) to (a), (b), a bare container start and each other.

Each run measures one runtime (`runtime`, the default `python3`): its image for (a) and (b), an
echo in its language (`spinlet.bench.twins`) for the rest. `run_all` measures several back to back
and compares each one's warm and first-call p50 with the first's.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from spinlet.bench.server import bench_server
from spinlet.bench.twins import Echo, echo_for
from spinlet.runtime.backend import FunctionSpec
from spinlet.runtime.catalog import DEFAULT, ShippedRuntime, shipped
from spinlet.runtime.docker_driver import DockerDriver
from spinlet.runtime.driver import SandboxShape
from spinlet.runtime.protocol import CODE_DIR_FEATURE, RuntimeConnection

Progress = Callable[[str], None]
MiB = 1024 * 1024
WARM = "(c) spinlet warm sync, concurrency 1"
FIRST = "(d) first call, stem cell ready"


@dataclass(frozen=True)
class BenchOptions:
    runtime: str = DEFAULT.name  # a shipped runtime: its functions are measured
    image: str = DEFAULT.image  # its image
    samples: int = 500  # sequential calls for latency
    duration: float = 10.0  # seconds of each throughput phase
    concurrency: tuple[int, ...] = (16, 64)
    function_concurrency: int = 8
    first_calls: int = 10
    naive_calls: int = 5
    memory_size: int = 128 * MiB
    cpu: int = 1000
    requirements: str | None = None  # also measure functions with this layer (Python only)

    @property
    def shipped(self) -> ShippedRuntime:
        entry = shipped(self.runtime)
        if entry is None:
            raise RuntimeError(f"{self.runtime!r} is not a runtime shipped with Spinlet")
        return entry

    @property
    def echo(self) -> Echo:
        return echo_for(self.shipped)


@dataclass
class Report:
    options: BenchOptions
    rows: list[dict[str, Any]] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, samples_ms: list[float], **extra: Any) -> dict[str, Any]:
        row = {"measure": name, "n": len(samples_ms), **percentiles(samples_ms), **extra}
        self.rows.append(row)
        return row

    def row(self, name: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["measure"] == name)


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(p99, 3)}


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


async def measure_floor(options: BenchOptions, report: Report, progress: Progress) -> None:
    """(a) and the bare start: hardened containers made by the Docker driver, used directly."""
    node = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="sb-", dir="/tmp") as tmp:
        driver = DockerDriver(node, Path(tmp))
        try:
            image_id = await driver.image_id(options.image)
            if image_id is None:
                raise RuntimeError(
                    f"image {options.image} is missing: spinlet runtimes build {options.runtime}"
                )
            spec = FunctionSpec(
                function_id="bench",
                function_name="bench",
                version=0,
                package_hash="bench",
                image=options.image,
                memory_size=options.memory_size,
                cpu=options.cpu,
            )
            progress(f"bare container start x{options.first_calls}")
            starts = []
            for _ in range(options.first_calls):
                started = time.perf_counter()
                sandbox = await driver.create(SandboxShape.of(spec, image_id), spec)
                conn = RuntimeConnection(sandbox.socket_path)
                await conn.wait_ready(30)
                starts.append(_ms(started))
                await conn.close()
                await driver.destroy(sandbox)
            report.add("bare docker create+start+ready", starts)
            progress(f"floor: direct /run on a warm container x{options.samples}")
            sandbox = await driver.create(SandboxShape.of(spec, image_id), spec)
            conn = RuntimeConnection(sandbox.socket_path)
            await conn.wait_ready(30)
            echo = options.echo
            code: bytes | str = echo.code
            if CODE_DIR_FEATURE in conn.features:  # given as the node gives it: extracted
                code = (await driver.fill_code(sandbox, echo.code)).code
            reply = await conn.init(code, echo.entry, {}, MiB)
            if reply.error is not None:
                raise RuntimeError(f"the echo did not load: {reply.error}")
            calls = []
            for i in range(options.samples):
                started = time.perf_counter()
                await conn.run(
                    {
                        "input": i,
                        "execution_id": str(i),
                        "function_id": "bench",
                        "function_name": "bench",
                        "function_version": 0,
                    }
                )
                calls.append(_ms(started))
            report.add("(a) floor: warm container, direct", calls)
            await conn.close()
            await driver.destroy(sandbox)
        finally:
            await driver.remove_leftovers()
            await driver.close()


async def measure_naive(options: BenchOptions, report: Report, progress: Progress) -> None:
    """(b) `docker run` per call, hardened like Spinlet's containers."""
    progress(f"naive: docker run per call x{options.naive_calls}")
    command = [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "10001:10001",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--memory",
        str(options.memory_size),
        "--log-driver",
        "none",
        options.image,
        *options.echo.naive,
    ]
    calls = []
    for _ in range(options.naive_calls):
        started = time.perf_counter()
        await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True)
        calls.append(_ms(started))
    report.add("(b) naive: docker run per call", calls)


async def _create(
    http: aiohttp.ClientSession, options: BenchOptions, name: str, **fields: Any
) -> str:
    echo = options.echo
    form = aiohttp.FormData()
    form.add_field("name", name)
    form.add_field("runtime_id", options.runtime)
    form.add_field("entry", echo.entry)
    for key, value in fields.items():
        form.add_field(key, str(value))
    form.add_field("package", echo.package, filename=echo.filename)
    async with http.post("/v1/functions", data=form) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"creating {name} failed: {body}")
        return str(body["id"])


async def _execute(
    http: aiohttp.ClientSession, function_id: str, value: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        "/v1/executions", json={"function_id": function_id, "input": value}
    ) as response:
        return response.status, await response.json()


async def _warm_latencies(
    http: aiohttp.ClientSession, function_id: str, samples: int
) -> list[float]:
    """Milliseconds of `samples` sync executions one after another, each on a warm container,
    after 20 unmeasured ones that warm the function up."""
    for i in range(20):
        await _execute(http, function_id, i)
    calls = []
    for i in range(samples):
        started = time.perf_counter()
        status, body = await _execute(http, function_id, i)
        calls.append(_ms(started))
        if status != 201 or body["start_kind"] != "warm":
            raise RuntimeError(f"unexpected execution: {status} {body}")
    return calls


async def measure_spinlet(options: BenchOptions, report: Report, progress: Progress) -> None:
    """(c) and (d) through the public API of a node started for the purpose."""
    env = {"SPINLET_MAX_CONTAINERS": "200"}
    async with bench_server(env) as url:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(url, connector=connector) as http:
            function_id = await _create(
                http, options, "bench-echo", concurrency=options.function_concurrency
            )
            await _runtime_ready(http, options.runtime)
            progress(f"spinlet: sync executions, concurrency 1, x{options.samples}")
            calls = await _warm_latencies(http, function_id, options.samples)
            report.add("(c) spinlet warm sync, concurrency 1", calls)
            for clients in options.concurrency:
                progress(f"spinlet: throughput with {clients} clients for {options.duration:g}s")
                await _throughput(http, function_id, clients, options, report)
            progress(f"spinlet: first calls x{options.first_calls} with and without stem cells")
            stem, cold, kinds = [], [], {"stem": 0, "cold": 0, "warm": 0}
            for i in range(options.first_calls):
                fid = await _create(http, options, f"bench-first-{i}")
                await _settled(http)  # the stem cell taken before is refilled
                started = time.perf_counter()
                _, body = await _execute(http, fid, i)
                stem.append(_ms(started))
                kinds[body["start_kind"]] += 1
                # A memory size no stem cell has: the container must be created for it.
                fid = await _create(
                    http,
                    options,
                    f"bench-cold-{i}",
                    memory_size=options.memory_size + (i + 1) * MiB,
                )
                await _settled(http)  # no container being made meanwhile: a cold start alone
                started = time.perf_counter()
                _, body = await _execute(http, fid, i)
                cold.append(_ms(started))
            report.add("(d) first call, stem cell ready", stem, start_kinds=kinds)
            report.add("(d) first call, no stem cell", cold)
            if options.requirements is not None and options.echo.python:
                await _measure_layer(http, options, report, progress)


async def _available(
    http: aiohttp.ClientSession, path: str, failed: set[str], what: str, within: float = 900.0
) -> None:
    """Wait until the record at `path` is `available`; raise when its status is in `failed`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with http.get(path) as response:
            body = await response.json()
        if body["status"] == "available":
            return
        if body["status"] in failed:
            raise RuntimeError(f"{what} did not build: {body.get('status_message')}")
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} was still not available after {within:g} s")


async def _built(http: aiohttp.ClientSession, function_id: str) -> None:
    await _available(http, f"/v1/functions/{function_id}", {"error"}, "the layer")


async def _measure_layer(
    http: aiohttp.ClientSession, options: BenchOptions, report: Report, progress: Progress
) -> None:
    """(e): the same echo code with a dependency layer linked in (it imports none of it: what
    is measured is the platform's cost of the layer, not the packages' import time)."""
    assert options.requirements is not None
    progress("spinlet: building a dependency layer")
    started = time.perf_counter()
    function_id = await _create(
        http,
        options,
        "bench-layer",
        concurrency=options.function_concurrency,
        requirements=options.requirements,
    )
    await _built(http, function_id)
    report.add("(e) layer build: resolve, install, store", [_ms(started)])
    progress(f"spinlet: sync executions with a layer, concurrency 1, x{options.samples}")
    calls = await _warm_latencies(http, function_id, options.samples)
    report.add("(e) spinlet warm sync with a layer, concurrency 1", calls)
    progress(f"spinlet: first calls with a cached layer x{options.first_calls}")
    first, kinds = [], {"stem": 0, "cold": 0, "warm": 0}
    for i in range(options.first_calls):
        fid = await _create(
            http, options, f"bench-layer-first-{i}", requirements=options.requirements
        )
        await _built(http, fid)  # the same build: available at once
        await _settled(http)
        started = time.perf_counter()
        _, body = await _execute(http, fid, i)
        first.append(_ms(started))
        kinds[body["start_kind"]] += 1
    report.add("(e) first call with a layer, stem cell ready", first, start_kinds=kinds)


async def _runtime_ready(http: aiohttp.ClientSession, runtime: str) -> None:
    """Wait until the node can run `runtime` (a function created on it started its build)."""
    await _available(http, f"/v1/runtimes/{runtime}", {"error"}, f"runtime {runtime}")


async def _settled(http: aiohttp.ClientSession, within: float = 60.0) -> None:
    """Wait until the node is making no container (stem cells refilled), as `/metrics` says."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with http.get("/metrics") as response:
            text = await response.text()
        if re.search(r'^spinlet_containers\{state="starting"\} 0\.0$', text, re.MULTILINE):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the node was still making containers after {within:g} s")


async def _throughput(
    http: aiohttp.ClientSession,
    function_id: str,
    clients: int,
    options: BenchOptions,
    report: Report,
) -> None:
    latencies: list[float] = []
    rejected = 0
    deadline = time.perf_counter() + options.duration

    async def client() -> None:
        nonlocal rejected
        i = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, _ = await _execute(http, function_id, i)
            if status == 201:
                latencies.append(_ms(started))
            elif status == 429:
                rejected += 1
                await asyncio.sleep(0.01)
            else:
                raise RuntimeError(f"execution failed with HTTP {status}")
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    report.add(
        f"(c) spinlet throughput, {clients} clients",
        latencies,
        per_s=round(len(latencies) / elapsed),
        rejected_429=rejected,
    )


async def run(options: BenchOptions, progress: Progress) -> Report:
    report = Report(options)
    await measure_floor(options, report, progress)
    await measure_naive(options, report, progress)
    await measure_spinlet(options, report, progress)
    floor = report.row("(a) floor: warm container, direct")["p50_ms"]
    naive = report.row("(b) naive: docker run per call")["p50_ms"]
    bare = report.row("bare docker create+start+ready")["p50_ms"]
    warm = report.row("(c) spinlet warm sync, concurrency 1")["p50_ms"]
    ratios = {
        "warm p50 / floor p50": round(warm / floor, 2),
        "warm p50 / naive p50": round(warm / naive, 4),
        "first call with stem / bare start": round(
            report.row("(d) first call, stem cell ready")["p50_ms"] / bare, 2
        ),
        "first call without stem / bare start": round(
            report.row("(d) first call, no stem cell")["p50_ms"] / bare, 2
        ),
    }
    if options.requirements is not None and options.echo.python:
        stem = report.row("(d) first call, stem cell ready")["p50_ms"]
        layered = report.row("(e) first call with a layer, stem cell ready")["p50_ms"]
        layered_warm = report.row("(e) spinlet warm sync with a layer, concurrency 1")["p50_ms"]
        ratios["first call with a layer / without (stem)"] = round(layered / stem, 2)
        ratios["warm p50 with a layer / without"] = round(layered_warm / warm, 2)
    report.ratios = ratios
    return report


async def run_all(options: list[BenchOptions], progress: Progress) -> list[Report]:
    """One report per runtime, measured one after the other."""
    reports = []
    for each in options:
        progress(f"runtime {each.runtime} ({each.image})")
        reports.append(await run(each, progress))
    return reports


def across(reports: list[Report]) -> dict[str, float]:
    """Each runtime's warm and first-call p50 over the first runtime's."""
    if not reports:
        return {}
    first = reports[0]
    base = first.options.runtime
    ratios = {}
    for report in reports[1:]:
        name = report.options.runtime
        for label, measure in (("warm p50", WARM), ("first call with stem p50", FIRST)):
            ratios[f"{name} / {base} {label}"] = round(
                report.row(measure)["p50_ms"] / first.row(measure)["p50_ms"], 2
            )
    return ratios
