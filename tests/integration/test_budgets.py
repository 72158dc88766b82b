"""Budgets per Region, measured where Cognito sees the calls: one stub per Region.

Two Regions drain at once on their own budgets; throttling one leaves the other's rate alone; a
backlog in one Region does not hold back requests for the other (head-of-line). The worker runs as
its own process; every figure comes from the stubs' arrival times. Assertions keep margins for a
shared, busy machine; the exact figures are printed (and `make bench` holds them to the targets).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.measure import between, busiest_window, percentile
from devstack.cognito_stub import THROTTLED, Call, StubProcess
from tests.conftest import TopicFactory
from tests.integration.conftest import Names, WorkerProcess, settings_for
from tests.integration.lanes import (
    TimedPublisher,
    ok_calls,
    request,
    requests,
    revoke_times,
    start_worker,
    summary,
)

pytestmark = pytest.mark.integration

US, EU = "us-east-1", "eu-west-1"
US_REQUESTS = 15
# Kafka keeps each partition's order and the worker holds at most max_in_flight x 8 records read
# ahead (buffered or parked for a budget): a request behind more than that of a slow budget's
# backlog in its partition is read only once that budget has worked through the excess.
LATENCY = {"dist": "uniform", "min_ms": 5, "max_ms": 25}


@pytest.fixture
async def stubs() -> AsyncIterator[dict[str, StubProcess]]:
    async with (
        StubProcess({"seed": 1, "latency": LATENCY}) as us,
        StubProcess({"seed": 2, "latency": LATENCY}) as eu,
    ):
        yield {US: us, EU: eu}


def worker_for(
    bootstrap: str,
    stubs: dict[str, StubProcess],
    names: Names,
    budgets: dict[str, float],
    log: Path,
) -> WorkerProcess:
    settings = settings_for(
        bootstrap,
        stubs[US].endpoint_url,
        names,
        rate={"per_second": budgets[US]},
        shutdown_timeout_seconds=4,
    )
    endpoints = {region: stub.endpoint_url for region, stub in stubs.items()}
    regions = json.dumps({EU: budgets[EU]})
    return start_worker(settings, log, endpoints=endpoints, SIGNOUT_RATE__REGIONS=regions)


async def first_call(stub: StubProcess, within: float = 45.0) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        calls = await stub.calls()
        if calls:
            return min(c.mono for c in calls)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no call within {within:.0f} s")


def rate(calls: list[Call], start: float, end: float) -> float:
    return between([c.mono for c in ok_calls(calls)], start, end) / (end - start)


@pytest.mark.timeout(150)
async def test_two_regions_each_on_its_own_budget_and_throttling_one_leaves_the_other(
    kafka_bootstrap: str,
    stubs: dict[str, StubProcess],
    make_topic: TopicFactory,
    names: Names,
    worker_processes: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    budgets = {US: 10.0, EU: 30.0}
    phase = 12.0
    names.topic = await make_topic("regions", partitions=4)
    # One us-east-1 request to three eu-west-1 ones, as the budgets are: neither waits on the other.
    us, eu = requests(US, "us", 300), requests(EU, "eu", 900)
    backlog = [r for i, one in enumerate(us) for r in (one, *eu[3 * i : 3 * i + 3])]
    async with TimedPublisher(kafka_bootstrap) as publisher:
        await publisher.backlog(names.topic, backlog)
    worker = worker_for(kafka_bootstrap, stubs, names, budgets, tmp_path / "worker.log")
    worker_processes.append(worker)

    start = await first_call(stubs[US]) + 1.0  # the first second is start-up
    await asyncio.sleep(max(start + phase - time.monotonic(), 0))
    await stubs[EU].configure(quota_per_second=15)  # someone else uses most of eu-west-1's quota
    throttled_from = time.monotonic()
    await asyncio.sleep(phase)
    end = time.monotonic()
    worker.terminate()
    await worker.wait(30)

    calls = {region: await stub.calls() for region, stub in stubs.items()}
    busiest = {region: busiest_window([c.mono for c in calls[region]]) for region in budgets}
    alone = {region: rate(calls[region], start, throttled_from) for region in budgets}
    us_after = rate(calls[US], throttled_from + 1.0, end)
    eu_after = rate(calls[EU], throttled_from + 1.0, end)
    throttles = sum(1 for c in calls[EU] if c.result == THROTTLED)
    for region, budget in budgets.items():
        print(
            f"{region} budget {budget:g}: busiest 1 s {busiest[region]},"
            f" achieved {alone[region]:.2f}/s = {alone[region] / budget:.3f} x budget"
        )
    print(
        f"eu-west-1 quota 15 from then on: eu-west-1 {eu_after:.2f} ok/s, {throttles} throttled;"
        f" us-east-1 {us_after:.2f}/s (was {alone[US]:.2f}/s)"
    )
    for region, budget in budgets.items():
        assert busiest[region] <= budget + 2
        assert alone[region] >= 0.85 * budget
    assert throttles > 0, "eu-west-1 was throttled"
    assert eu_after <= 15 + 2
    assert us_after >= 0.85 * budgets[US], "throttling in eu-west-1 slowed us-east-1"
    assert us_after >= 0.85 * alone[US]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("backlog", [400, 3000])
async def test_a_backlog_in_one_region_does_not_hold_back_another(
    backlog: int,
    kafka_bootstrap: str,
    stubs: dict[str, StubProcess],
    make_topic: TopicFactory,
    names: Names,
    worker_processes: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    names.topic = await make_topic("hol", partitions=4)
    budgets = {US: 10.0, EU: 5.0}
    async with TimedPublisher(kafka_bootstrap) as publisher:
        await publisher.backlog(names.topic, requests(EU, "eu", backlog))
        worker = worker_for(kafka_bootstrap, stubs, names, budgets, tmp_path / "worker.log")
        worker_processes.append(worker)
        await first_call(stubs[EU])
        await asyncio.sleep(2.0)  # the worker has read as far ahead as it will
        for i in range(US_REQUESTS):
            await publisher.send(names.topic, *request(US, f"us-{i}"))
            await asyncio.sleep(1.0)
    published = publisher.published
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if None not in revoke_times(await stubs[US].calls(), published).values():
            break
        await asyncio.sleep(0.5)
    worker.terminate()
    await worker.wait(30)

    times = revoke_times(await stubs[US].calls(), published)
    eu_calls = await stubs[EU].calls()
    print(summary(f"us-east-1 requests behind {backlog:,} eu-west-1 at 5/s", times))
    print(f"eu-west-1 meanwhile: {len(ok_calls(eu_calls))} signed out")
    seen = [t for t in times.values() if t is not None]
    assert len(seen) == US_REQUESTS, f"{US_REQUESTS - len(seen)} us-east-1 requests not signed out"
    assert percentile(seen, 99) < 2.0
