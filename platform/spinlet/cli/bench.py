"""`spinlet bench`: measure Spinlet against its floor and the naive way, in one run."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

import click

from spinlet.cli.output import console

if TYPE_CHECKING:
    from rich.table import Table

    from spinlet.runtime.catalog import ShippedRuntime


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    return table


def _ratios(title: str, ratios: dict[str, float]) -> Table:
    return _table(title, [{"ratio": k, "value": v} for k, v in ratios.items()])


def _runtimes(names: tuple[str, ...]) -> list[ShippedRuntime]:
    """The shipped runtimes named (`all`: every one, the default first), in the order given."""
    from spinlet.runtime.catalog import CATALOG, DEFAULT, shipped

    if not names:
        return [DEFAULT]
    chosen: list[ShippedRuntime] = []
    for name in names:
        if name == "all":
            entries = list(CATALOG)
        else:
            entry = shipped(name)
            if entry is None:
                known = ", ".join(e.name for e in CATALOG)
                raise click.BadParameter(
                    f"{name!r} is not a shipped runtime ({known} or all)", param_hint="--runtime"
                )
            entries = [entry]
        chosen += [e for e in entries if e not in chosen]
    return chosen


@click.command()
@click.option("--samples", type=int, default=500, show_default=True, help="Sequential calls.")
@click.option("--duration", type=float, default=10.0, show_default=True, help="Seconds per load.")
@click.option(
    "--concurrency",
    type=int,
    multiple=True,
    help="Clients of a throughput phase (repeatable; default 16 and 64).",
)
@click.option(
    "--function-concurrency",
    type=int,
    default=8,
    show_default=True,
    help="Containers the benchmarked function may use.",
)
@click.option("--first-calls", type=int, default=10, show_default=True)
@click.option(
    "--requirements",
    type=click.File("r", encoding="utf-8"),
    metavar="FILE",
    help="Also measure functions with this dependency layer (built by the node's pip).",
)
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    metavar="NAME",
    help="Measure functions of this shipped runtime (repeatable, or `all`; default python3).",
)
@click.option("--quick", is_flag=True, help="A short smoke run (numbers are not meaningful).")
@click.option("--listing", type=int, help="Also time the executions list with this many rows.")
@click.option("--drain", type=int, help="Also fire this many async executions and drain them.")
@click.option(
    "--suite/--no-suite",
    default=True,
    help="Run the latency, throughput and first-call suite (--no-suite: only --listing/--drain).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench(
    samples: int,
    duration: float,
    concurrency: tuple[int, ...],
    function_concurrency: int,
    first_calls: int,
    requirements: TextIO | None,
    runtimes: tuple[str, ...],
    quick: bool,
    listing: int | None,
    drain: int | None,
    suite: bool,
    as_json: bool,
) -> None:
    """Benchmark Spinlet on this machine (needs Docker and the runtime image).

    \b
    Examples:
      spinlet bench --quick
      spinlet bench --json > bench.json
      spinlet bench --no-suite --listing 1000000
      spinlet bench --requirements functions/deps/requirements.txt
      spinlet bench --quick --runtime nodejs20
      spinlet bench --runtime all
    """
    import asyncio
    from dataclasses import replace

    from spinlet.bench import suite as bench_suite

    chosen = _runtimes(runtimes)
    options = bench_suite.BenchOptions(
        samples=20 if quick else samples,
        duration=1.0 if quick else duration,
        concurrency=concurrency or ((4,) if quick else (16, 64)),
        function_concurrency=function_concurrency,
        first_calls=2 if quick else first_calls,
        naive_calls=1 if quick else 5,
        requirements=requirements.read() if requirements is not None else None,
    )

    def progress(line: str) -> None:
        if not as_json:
            console().print(f"[dim]{line}[/dim]", highlight=False)

    each = [replace(options, runtime=entry.name, image=entry.image) for entry in chosen]
    reports = asyncio.run(bench_suite.run_all(each, progress)) if suite else []
    report = reports[0] if reports else None
    extra: dict[str, Any] = {}
    if listing:
        from spinlet.bench import listing as listing_bench

        progress(f"executions list with {listing} rows stored (seeding takes a while)")
        extra["listing"] = asyncio.run(listing_bench.run(listing)).summary
    if drain:
        from spinlet.bench import drain as drain_bench
        from spinlet.bench.server import bench_server

        async def fire_and_drain() -> dict[str, object]:
            async with bench_server() as url:
                return (await drain_bench.run(url, drain)).summary

        progress(f"async: {drain} executions fired and drained")
        extra["async"] = asyncio.run(fire_and_drain())
    if as_json:
        body: dict[str, Any] = dict(extra)
        if report is not None:
            body = {
                "options": asdict(report.options),
                "results": report.rows,
                "ratios": report.ratios,
                "runtimes": {
                    r.options.runtime: {
                        "image": r.options.image,
                        "results": r.rows,
                        "ratios": r.ratios,
                    }
                    for r in reports
                },
                "across_runtimes": bench_suite.across(reports),
                **extra,
            }
        click.echo(json.dumps(body, indent=2))
        return
    for each_report in reports:
        name = each_report.options.runtime
        console().print(_table(f"spinlet bench: {name}", each_report.rows))
        console().print(_ratios(f"ratios (p50): {name}", each_report.ratios))
    if len(reports) > 1:
        console().print(_ratios("across runtimes (p50)", bench_suite.across(reports)))
    for name, summary in extra.items():
        console().print(_table(name, [summary]))
    console().print(
        f"limits: memory {options.memory_size // 1024 // 1024} MiB, cpu {options.cpu} "
        f"millicores, function concurrency {options.function_concurrency}"
    )
