"""`spinlet bench`: measure Spinlet against its floor and the naive way, in one run."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

import click

from spinlet.cli.output import console

if TYPE_CHECKING:
    from rich.table import Table


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
    """
    import asyncio

    from spinlet.bench import suite as bench_suite

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

    report = asyncio.run(bench_suite.run(options, progress)) if suite else None
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
                **extra,
            }
        click.echo(json.dumps(body, indent=2))
        return
    if report is not None:
        console().print(_table("spinlet bench", report.rows))
        console().print(
            _table("ratios (p50)", [{"ratio": k, "value": v} for k, v in report.ratios.items()])
        )
    for name, summary in extra.items():
        console().print(_table(name, [summary]))
    console().print(
        f"limits: memory {options.memory_size // 1024 // 1024} MiB, cpu {options.cpu} "
        f"millicores, function concurrency {options.function_concurrency}"
    )
