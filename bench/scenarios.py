"""The budgeted scenarios: a long drain (memory, log noise), a short backlog (rate, bytes per
record) and two replicas from a cold start. Each returns its figures."""

from __future__ import annotations

import asyncio
import time

from bench.figures import Figure
from bench.measure import busiest_window, median, slope
from bench.procs import WorkerProc
from bench.run import Bench, Watch, wait_assigned
from bench.stack import fresh_topics, publish
from devstack.cognito_stub import OK, THROTTLED, Call

MB = 1_000_000
PAUSE_LINES = ("buffer full: partitions paused", "partitions resumed")
DRAIN_BUDGET = 20.0
RATE_BUDGET = 50.0
RATE_BACKLOG = 3_000
GROUP_BUDGET = 40.0
GROUP_BACKLOG = 600


async def long_drain(bench: Bench) -> list[Figure]:
    """Budget 20 against a large backlog: RSS over idle, its slope, pause/resume lines."""
    await bench.fresh_stub()
    topics = await fresh_topics(bench.bootstrap, "drain")
    worker = bench.worker("drain", topics, DRAIN_BUDGET)
    watch = Watch(worker, bench.broker_port)
    try:
        await wait_assigned(worker)
        await asyncio.sleep(3.0)
        idle = await _idle_rss(worker)
        published = time.monotonic()
        record_size = await publish(bench.bootstrap, topics.topic, bench.params.backlog)
        published = time.monotonic() - published
        lines_before = worker.count(*PAUSE_LINES)
        watch.take()
        start, bytes_before = time.monotonic(), watch.received_total()
        await watch.until(lambda: not worker.alive(), bench.params.drain_seconds)
        elapsed = time.monotonic() - start
        received = watch.received_total() - bytes_before
        lines = worker.count(*PAUSE_LINES) - lines_before
        paused, resumed = (worker.count(line) for line in PAUSE_LINES)
    finally:
        worker.stop()
    calls = [c for c in await bench.calls() if start <= c.mono < start + elapsed]
    return [
        *_drain_figures(bench, median(idle), watch, start, elapsed, (lines, paused, resumed)),
        Figure(
            "drain: broker bytes per call (startup prefetch included)",
            f"{received / max(len(calls), 1):.0f} B",
            f"(record {record_size} B)",
            None,
            {
                "backlog": bench.params.backlog,
                "publish_s": published,
                "calls": len(calls),
                "calls_per_s": len(calls) / elapsed,
                "received_MiB_per_s": received / elapsed / 2**20,
            },
        ),
    ]


async def _idle_rss(worker: WorkerProc) -> list[float]:
    samples = []
    for _ in range(5):
        samples.append(float(worker.sample().rss))
        await asyncio.sleep(0.5)
    return samples


def _drain_figures(
    bench: Bench,
    idle: float,
    watch: Watch,
    start: float,
    elapsed: float,
    counts: tuple[int, int, int],
) -> list[Figure]:
    lines, paused, resumed = counts
    during = [s for s in watch.samples if s.at >= start]
    peak = max(s.rss for s in during)
    per_minute = slope([(s.at - start, s.rss) for s in during]) * 60 / MB
    over = (peak - idle) / MB
    allowed_lines = elapsed / 10
    return [
        Figure(
            f"RSS over idle, {bench.params.backlog:,} backlog, budget 20, {elapsed:.0f} s",
            f"+{over:.1f} MB, slope {per_minute:+.2f} MB/min",
            "<= +30 MB, slope <= 1 MB/min",
            over <= 30 and per_minute <= 1.0,
            {
                "idle_rss_MB": idle / MB,
                "max_rss_MB": peak / MB,
                "last_rss_MB": during[-1].rss / MB,
                "samples": len(during),
                "cpu_s_per_s": (during[-1].cpu - during[0].cpu) / elapsed,
            },
        ),
        Figure(
            "pause/resume log lines during that drain",
            f"{lines} in {elapsed:.0f} s",
            f"<= {allowed_lines:.0f} (1 per 10 s)",
            lines <= allowed_lines,
            {"paused_lines_whole_run": paused, "resumed_lines_whole_run": resumed},
        ),
    ]


async def short_backlog(bench: Bench) -> list[Figure]:
    """3,000 records at budget 50, quota 50: achieved rate, busiest second, bytes per record."""
    await bench.fresh_stub(quota_per_second=int(RATE_BUDGET))
    topics = await fresh_topics(bench.bootstrap, "rate")
    record_size = await publish(bench.bootstrap, topics.topic, RATE_BACKLOG)
    worker = bench.worker("rate", topics, RATE_BUDGET, "--until-idle", "2")
    watch = Watch(worker, bench.broker_port, every=0.5)
    try:
        await watch.until(lambda: not worker.alive(), 60 + 2 * RATE_BACKLOG / RATE_BUDGET)
    finally:
        worker.stop()
    calls = await bench.calls()
    return [_rate_figure(calls), _bytes_figure(watch.received_total(), record_size)]


def _rate_figure(calls: list[Call]) -> Figure:
    times = [c.mono for c in calls]
    span = max(times) - min(times)
    achieved = (len(times) - 1) / span / RATE_BUDGET
    busiest = busiest_window(times)
    throttles = sum(1 for c in calls if c.result == THROTTLED)
    return Figure(
        f"achieved rate / budget, {RATE_BACKLOG:,} backlog, quota = budget = {RATE_BUDGET:g}",
        f"{achieved:.3f}, busiest 1 s {busiest}, {throttles} throttles",
        f">= 0.985, <= {RATE_BUDGET + 1:g}, 0",
        achieved >= 0.985 and busiest <= RATE_BUDGET + 1 and throttles == 0,
        {"calls": len(calls), "ok": sum(1 for c in calls if c.result == OK), "span_s": span},
    )


def _bytes_figure(received: int, record_size: int) -> Figure:
    per_record = received / RATE_BACKLOG
    return Figure(
        "broker bytes per record, under a budget (whole drain)",
        f"{per_record:.0f} B = {per_record / record_size:.2f} x record",
        "<= 2 x record",
        per_record <= 2 * record_size,
        {"received_bytes": received, "record_bytes": record_size, "records": RATE_BACKLOG},
    )


async def two_replicas(bench: Bench) -> list[Figure]:
    """Two workers started together on one group with a budget of 40: the busiest second."""
    await bench.fresh_stub()
    topics = await fresh_topics(bench.bootstrap, "group")
    await publish(bench.bootstrap, topics.topic, GROUP_BACKLOG)
    workers = [
        bench.worker(f"group-{n}", topics, GROUP_BUDGET, "--until-idle", "3") for n in (1, 2)
    ]
    try:
        await Watch(workers[0], bench.broker_port).until(
            lambda: not any(w.alive() for w in workers), 60 + 2 * GROUP_BACKLOG / GROUP_BUDGET
        )
    finally:
        for worker in workers:
            worker.stop()
    times = [c.mono for c in await bench.calls()]
    busiest = busiest_window(times)
    first_second = busiest_window([t for t in times if t < min(times) + 1.0])
    return [
        Figure(
            f"two replicas, cold start, group budget {GROUP_BUDGET:g}: busiest 1 s",
            str(busiest),
            f"<= {GROUP_BUDGET + 1:g}",
            busiest <= GROUP_BUDGET + 1,
            {
                "calls": len(times),
                "first_second": first_second,
                "mean_rate": (len(times) - 1) / (max(times) - min(times)),
            },
        )
    ]
