"""The urgent lane: two replicas drain a bulk backlog at budget 20 while urgent requests arrive,
with a rebalance in the middle (the second replica joins during the urgent requests); and the same
requests sent to the bulk topic instead, for comparison. Time to revoke is the stub's arrival time
minus the publish time (the stub records a call before sleeping its latency)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.figures import Figure
from bench.measure import arrivals, busiest_window, percentile
from bench.procs import WorkerProc
from bench.run import Bench, at_time, first_call, wait_until
from bench.stack import Sender, Topics, create_topic, fresh_topics, publish, region_request
from devstack.cognito_stub import OK, Call

BUDGET = 20.0
URGENT = 20
URGENT_EVERY = 1.5  # seconds between urgent requests
URGENT_FROM = 5.0  # seconds after the first call
JOIN_AT = URGENT_FROM + URGENT * URGENT_EVERY / 2  # the second replica joins mid-way
NO_LANE_WAIT = 30.0  # after the last urgent request, without the lane: then it is "> N s"


@dataclass
class Drained:
    published: dict[str, float]
    calls: list[Call]
    waited: float  # how long after the last urgent request the run was watched
    joined: float  # when the second replica was started


async def urgent_lane(bench: Bench) -> list[Figure]:
    run = await _drain(bench, lane=True)
    times = _times(run)
    seen = [t for t in times.values() if t is not None]
    busiest = busiest_window([c.mono for c in run.calls])
    at = _busiest_from([c.mono for c in run.calls], busiest)
    ok = {c.target for c in run.calls if c.result == OK}
    bulk_ok = len(ok - set(run.published))
    lost = (bench.params.urgent_bulk - bulk_ok) + (len(times) - len(seen))
    p50, p99 = percentile(seen, 50), percentile(seen, 99)
    name = f"urgent lane, 2 replicas, {bench.params.urgent_bulk:,} bulk at {BUDGET:g}"
    return [
        Figure(
            f"{name}: urgent time to revoke p50 / p99",
            f"{p50:.3f} / {p99:.3f} s ({len(seen)}/{len(times)})",
            "p99 <= 1 s",
            len(seen) == len(times) and p99 <= 1.0,
            {"urgent": len(times), "max_s": max(seen, default=float("nan"))},
        ),
        Figure(
            f"{name}: busiest 1 s, bulk signed out, lost (rebalance mid-way)",
            f"{busiest}, {bulk_ok:,}/{bench.params.urgent_bulk:,}, {lost} lost",
            f"<= {BUDGET + 1:g}, all, 0",
            busiest <= BUDGET + 1 and lost == 0,
            {
                "calls": len(run.calls),
                "distinct_ok": len(ok),
                "busiest_from_s_after_join": at - run.joined,
            },
        ),
    ]


async def without_lane(bench: Bench) -> list[Figure]:
    run = await _drain(bench, lane=False)
    times = _times(run)
    seen = [t for t in times.values() if t is not None]
    missing = len(times) - len(seen)
    if missing:
        # Those still waiting when the watch ended count as at least that long.
        shown = f"> {run.waited:.0f} s for {missing}/{len(times)}"
        shown += f"; revoked p50 {percentile(seen, 50):.1f} s" if seen else ""
    else:
        shown = f"{percentile(seen, 50):.1f} / {percentile(seen, 99):.1f} s"
    return [
        Figure(
            "same urgent requests on the bulk topic: time to revoke p50 / p99",
            shown,
            "(comparison)",
            None,
            {"revoked": len(seen), "watched_s_after_last": run.waited},
        )
    ]


async def _drain(bench: Bench, *, lane: bool) -> Drained:
    await bench.fresh_stub()
    topics = await fresh_topics(bench.bootstrap, "lane" if lane else "nolane")
    urgent_topic = await create_topic(bench.bootstrap, f"{topics.topic}.urgent")
    await publish(bench.bootstrap, topics.topic, bench.params.urgent_bulk)
    extra = {"SIGNOUT_KAFKA__URGENT_TOPIC": urgent_topic}
    workers = [_worker(bench, topics, 1, extra)]
    try:
        async with Sender(bench.bootstrap) as sender:
            first = await first_call(bench)
            for i in range(URGENT):
                await at_time(first + URGENT_FROM + i * URGENT_EVERY)
                if len(workers) == 1 and time.monotonic() >= first + JOIN_AT:
                    workers.append(_worker(bench, topics, 2, extra))
                token, value = region_request("us-east-1", f"urgent-{i}")
                await sender.send(urgent_topic if lane else topics.topic, token, value)
        last = time.monotonic()
        if lane:
            within = 120 + 2 * bench.params.urgent_bulk / BUDGET
            await wait_until(lambda: not any(w.alive() for w in workers), within, "drain")
        else:
            await _until_revoked(bench, sender.published, NO_LANE_WAIT)
        waited = time.monotonic() - last
        joined = workers[-1].started
    finally:
        for worker in workers:
            worker.stop()
    return Drained(sender.published, await bench.calls(), waited, joined)


def _worker(bench: Bench, topics: Topics, n: int, extra: dict[str, str]) -> WorkerProc:
    return bench.worker(f"urgent-{topics.topic}-{n}", topics, BUDGET, "--until-idle", "3", **extra)


def _busiest_from(times: list[float], busiest: int) -> float:
    """Where the first window [t, t + 1) holding `busiest` calls starts."""
    ordered = sorted(times)
    for i, start in enumerate(ordered[: len(ordered) - busiest + 1]):
        if ordered[i + busiest - 1] < start + 1.0:
            return start
    return float("nan")


def _times(run: Drained) -> dict[str, float | None]:
    first: dict[str, float] = {}
    for call in run.calls:
        if call.result == OK:
            first.setdefault(call.target, call.mono)
    return arrivals(first, run.published)


async def _until_revoked(bench: Bench, published: dict[str, float], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ok = {c.target for c in await bench.stub.calls() if c.result == OK}
        if set(published) <= ok:
            return
        await asyncio.sleep(0.5)
