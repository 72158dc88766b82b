"""Two Regions, one stub each: both draining at once on budgets 10 and 30, then the eu-west-1
quota cut below its budget (does us-east-1 slow down?); and head-of-line: us-east-1 requests
published one a second while eu-west-1 drains a 3,000-request backlog at 5/s."""

from __future__ import annotations

import asyncio
import json
import time

from bench.figures import Figure
from bench.measure import arrivals, between, busiest_window, percentile
from bench.procs import WorkerProc
from bench.run import STUB_LATENCY, Bench, at_time, first_call
from bench.stack import Sender, Topics, fresh_topics, region_request
from devstack.cognito_stub import OK, Call, StubProcess

US, EU = "us-east-1", "eu-west-1"
BUDGETS = {US: 10.0, EU: 30.0}
PHASE = 15.0  # seconds alone, then seconds with eu-west-1's quota cut
EU_QUOTA = 15
HOL_BACKLOG, HOL_BUDGET, HOL_REQUESTS = 3_000, 5.0, 20
HOL_WAIT = 10.0  # after the last us-east-1 request


def _worker(bench: Bench, eu: StubProcess, topics: Topics, budgets: dict[str, float]) -> WorkerProc:
    extra = {
        "SIGNOUT_COGNITO__ENDPOINT_URL": json.dumps(
            {US: bench.stub.endpoint_url, EU: eu.endpoint_url}
        ),
        "SIGNOUT_RATE__REGIONS": json.dumps({EU: budgets[EU]}),
    }
    return bench.worker(f"regions-{topics.topic}", topics, budgets[US], **extra)


def _ok(calls: list[Call], start: float, end: float) -> float:
    return between([c.mono for c in calls if c.result == OK], start, end) / (end - start)


async def two_regions(bench: Bench) -> list[Figure]:
    await bench.fresh_stub()
    topics = await fresh_topics(bench.bootstrap, "regions")
    # One us-east-1 request to three eu-west-1 ones, as the budgets are, enough for both phases.
    count = int(BUDGETS[US] * PHASE * 2.5)
    us = [region_request(US, f"us-{i}") for i in range(count)]
    eu = [region_request(EU, f"eu-{i}") for i in range(3 * count)]
    async with StubProcess({"seed": 12, "latency": STUB_LATENCY}) as eu_stub:
        async with Sender(bench.bootstrap) as sender:
            await sender.backlog(
                topics.topic, [r for i, u in enumerate(us) for r in (u, *eu[3 * i : 3 * i + 3])]
            )
        worker = _worker(bench, eu_stub, topics, BUDGETS)
        try:
            start = await first_call(bench) + 1.0  # the first second is start-up
            await at_time(start + PHASE)
            await eu_stub.configure(quota_per_second=EU_QUOTA)
            cut = time.monotonic()
            await at_time(cut + PHASE)
            end = time.monotonic()
        finally:
            worker.stop()
        calls = {US: await bench.calls(), EU: await eu_stub.calls()}
    figures = []
    for region, budget in BUDGETS.items():
        busiest = busiest_window([c.mono for c in calls[region]])
        achieved = _ok(calls[region], start, cut) / budget
        figures.append(
            Figure(
                f"two Regions at once, {region} budget {budget:g}: busiest 1 s, achieved",
                f"{busiest}, {achieved:.3f}",
                f"<= {budget + 1:g}, >= 0.95",
                busiest <= budget + 1 and achieved >= 0.95,
                {"calls": len(calls[region])},
            )
        )
    alone, after = _ok(calls[US], start, cut), _ok(calls[US], cut + 1.0, end)
    throttled = sum(1 for c in calls[EU] if c.result != OK)
    figures.append(
        Figure(
            f"{EU} quota cut to {EU_QUOTA}: {US} rate after / before",
            f"{after / alone:.3f} ({after:.2f} / {alone:.2f} per s)",
            ">= 0.95",
            after / alone >= 0.95,
            {"eu_ok_per_s_after": _ok(calls[EU], cut + 1.0, end), "eu_throttled": throttled},
        )
    )
    return figures


async def head_of_line(bench: Bench) -> list[Figure]:
    await bench.fresh_stub()
    topics = await fresh_topics(bench.bootstrap, "hol")
    budgets = {US: BUDGETS[US], EU: HOL_BUDGET}
    async with StubProcess({"seed": 13, "latency": STUB_LATENCY}) as eu_stub:
        async with Sender(bench.bootstrap) as sender:
            await sender.backlog(
                topics.topic, [region_request(EU, f"eu-{i}") for i in range(HOL_BACKLOG)]
            )
            worker = _worker(bench, eu_stub, topics, budgets)
            try:
                await _first_eu_call(eu_stub)
                await asyncio.sleep(2.0)
                for i in range(HOL_REQUESTS):
                    await sender.send(topics.topic, *region_request(US, f"us-{i}"))
                    await asyncio.sleep(1.0)
                await asyncio.sleep(HOL_WAIT)
            finally:
                worker.stop()
        first: dict[str, float] = {}
        for call in await bench.calls():
            if call.result == OK:
                first.setdefault(call.target, call.mono)
    times = arrivals(first, sender.published)
    seen = [t for t in times.values() if t is not None]
    shown = (
        f"p50 {percentile(seen, 50):.3f} / p99 {percentile(seen, 99):.3f} s"
        if len(seen) == len(times)
        else f"{len(seen)}/{len(times)} within {HOL_WAIT:.0f} s of the last"
    )
    return [
        Figure(
            f"head-of-line: {US} 1/s behind {HOL_BACKLOG:,} {EU} at {HOL_BUDGET:g}/s",
            shown,
            "p99 <= 1 s",
            len(seen) == len(times) and percentile(seen, 99) <= 1.0,
            {"revoked": len(seen), "requests": len(times)},
        )
    ]


async def _first_eu_call(stub: StubProcess, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await stub.calls():
        if time.monotonic() > deadline:
            raise TimeoutError("no eu-west-1 call")
        await asyncio.sleep(0.1)
