"""Quota shared with another app: a drain at budget 60 that meets, then loses, a competitor.

Phases: alone with no quota (the worker runs at its budget); then the stub's quota drops to 30
while another client calls at 10/s, without backing off (the worker has 20/s left); then the
quota and the other client go away again. Goodput and throttles are measured over the shared
phase; the calls per second of the whole run are what the plot shows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.client import OTHER_POOL, other_app
from bench.figures import Figure
from bench.measure import between
from bench.run import Bench, Watch
from bench.stack import fresh_topics, publish
from devstack.cognito_stub import OK, THROTTLED, Call

BUDGET = 60.0
QUOTA = 30
OTHER_RATE = 10.0
ALONE_S, SHARED_S, AFTER_S = 15.0, 40.0, 20.0
BACKLOG = 5_000


@dataclass
class Timeline:
    """What the plot needs: call times by who and how they ended, and the phase boundaries."""

    start: float
    shared_from: float
    shared_to: float
    end: float
    worker_ok: list[float]
    worker_throttled: list[float]
    other: list[float]


async def shared_quota(bench: Bench) -> tuple[list[Figure], Timeline]:
    await bench.fresh_stub()
    topics = await fresh_topics(bench.bootstrap, "shared")
    await publish(bench.bootstrap, topics.topic, BACKLOG)
    worker = bench.worker("shared", topics, BUDGET)
    watch = Watch(worker, bench.broker_port)
    try:
        await _first_call(bench)
        start = time.monotonic()
        await watch.until(lambda: not worker.alive(), ALONE_S)
        shared_from, shared_to = await _share(bench, watch)
        await watch.until(lambda: not worker.alive(), AFTER_S)
        end = time.monotonic()
    finally:
        worker.stop()
    timeline = _timeline(await bench.calls(), start, shared_from, shared_to, end)
    return [_figure(timeline)], timeline


async def _first_call(bench: Bench, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while (await bench.stub.stats()).total == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no call from the worker within {within:.0f} s")
        await asyncio.sleep(0.2)


async def _share(bench: Bench, watch: Watch) -> tuple[float, float]:
    stop = asyncio.Event()
    other = asyncio.create_task(other_app(bench.stub.endpoint_url, OTHER_RATE, stop))
    await bench.stub.configure(quota_per_second=QUOTA)
    shared_from = time.monotonic()
    try:
        await watch.until(lambda: not watch.worker.alive(), SHARED_S)
    finally:
        stop.set()
        await other
    await bench.stub.configure(quota_per_second=None)
    return shared_from, time.monotonic()


def _timeline(
    calls: list[Call], start: float, shared_from: float, shared_to: float, end: float
) -> Timeline:
    mine = [c for c in calls if not c.target.startswith(OTHER_POOL)]
    return Timeline(
        start=start,
        shared_from=shared_from,
        shared_to=shared_to,
        end=end,
        worker_ok=[c.mono for c in mine if c.result == OK],
        worker_throttled=[c.mono for c in mine if c.result == THROTTLED],
        other=[c.mono for c in calls if c.target.startswith(OTHER_POOL) and c.result == OK],
    )


def _figure(t: Timeline) -> Figure:
    span = t.shared_to - t.shared_from
    ok = between(t.worker_ok, t.shared_from, t.shared_to)
    throttled = between(t.worker_throttled, t.shared_from, t.shared_to)
    other = between(t.other, t.shared_from, t.shared_to)
    available = QUOTA * span - other
    goodput = ok / available
    share = throttled / max(ok + throttled, 1)
    return Figure(
        f"quota {QUOTA} shared with another client, budget {BUDGET:g}",
        f"goodput {goodput:.3f} x available, throttled {share:.1%}",
        ">= 0.92, <= 3%",
        goodput >= 0.92 and share <= 0.03,
        {
            "shared_s": span,
            "worker_ok": ok,
            "worker_throttled": throttled,
            "other_ok": other,
            "available": available,
            "alone_rate": between(t.worker_ok, t.start, t.shared_from) / (t.shared_from - t.start),
        },
    )
