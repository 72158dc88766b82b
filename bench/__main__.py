"""`make bench`: start a broker and a stub, run every scenario, print the table, draw the plot.

    .venv/bin/python -m bench            # defaults: about ten minutes
    BENCH_FULL=1 .venv/bin/python -m bench   # the 1,000,000-record, five-minute drain
    .venv/bin/python -m bench throughput     # one scenario only (here the no-budget comparison)

BENCH_BACKLOG, BENCH_DRAIN_SECONDS, BENCH_RAW_REQUESTS and BENCH_URGENT_BULK (bulk records behind
the urgent lane: 2,000, or 10,000 with BENCH_FULL) override single parameters.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from bench.figures import Figure, raw_numbers, table
from bench.lanes import urgent_lane, without_lane
from bench.plot import draw
from bench.regions import head_of_line, two_regions
from bench.run import STUB_LATENCY, Bench, Params
from bench.scenarios import long_drain, short_backlog, two_replicas
from bench.shared import shared_quota
from bench.stack import running_broker
from bench.throughput import raw_efficiency
from devstack.cognito_stub import StubProcess

T = TypeVar("T")
PLOT = Path(__file__).resolve().parent / "rate.png"


SCENARIOS = {
    "short-backlog": short_backlog,
    "two-replicas": two_replicas,
    "throughput": raw_efficiency,
    "two-regions": two_regions,
    "head-of-line": head_of_line,
    "urgent-lane": urgent_lane,
    "without-lane": without_lane,
}


async def run_all(params: Params, bootstrap: str, logs: Path, only: str | None) -> list[Figure]:
    config = {"seed": 11, "latency": STUB_LATENCY, "max_calls": 400_000}
    async with StubProcess(config) as stub:
        bench = Bench(params, bootstrap, stub, logs)
        if only == "shared-quota":
            return (await _timed(only, shared_quota(bench)))[0]  # no plot redrawn
        if only == "long-drain":
            return await _timed(only, long_drain(bench))
        if only is not None:  # one scenario, to iterate on
            return await _timed(only, SCENARIOS[only](bench))
        figures: list[Figure] = []
        for name, scenario in SCENARIOS.items():
            figures += await _timed(name, scenario(bench))
        shared, timeline = await _timed("shared-quota", shared_quota(bench))
        draw(timeline, PLOT)
        figures += shared + await _timed("long-drain", long_drain(bench))
        return figures


async def _timed(name: str, work: Awaitable[T]) -> T:
    started = time.monotonic()
    print(f"[bench] {name} ...", flush=True)
    result = await work
    print(f"[bench] {name}: {time.monotonic() - started:.0f} s", flush=True)
    return result


def main() -> int:
    only = sys.argv[1] if len(sys.argv) > 1 else None
    names = [*SCENARIOS, "shared-quota", "long-drain"]
    if only is not None and only not in names:
        print(f"usage: python -m bench [{'|'.join(names)}]  (not {only!r})", file=sys.stderr)
        return 2
    params = Params.from_env()
    started = time.monotonic()
    print(f"[bench] {params}", flush=True)
    with tempfile.TemporaryDirectory(prefix="signout-bench-") as logs:
        with running_broker() as bootstrap:
            figures = asyncio.run(run_all(params, bootstrap, Path(logs), only))
    print()
    print(table(figures))
    print()
    print("raw numbers:")
    print(raw_numbers(figures))
    if only is None:
        plot = PLOT.relative_to(Path.cwd()) if PLOT.is_relative_to(Path.cwd()) else PLOT
        print(f"\nplot: {plot}")
    print(f"total: {time.monotonic() - started:.0f} s")
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
