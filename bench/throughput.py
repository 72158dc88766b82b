"""No budget: the worker against a bare 64-task aiobotocore loop, same stub, one after the other.

Both run as their own processes and are measured the same way: calls per second from the stub's
own timestamps, CPU from /proc, both over the middle 80% of each run's calls (start-up, imports
and the tail are left out of both). On a shared machine the speed of the same code drifts by a
quarter from one half-minute to the next, so each side runs `ROUNDS` times, alternating (bare,
worker, bare, worker), and each side's best round is compared, as timeit takes the best of its
repeats; every round's numbers are printed.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.figures import Figure
from bench.procs import Sample, cpu_seconds, die_with_parent, rss_bytes
from bench.run import Bench, Watch
from bench.stack import fresh_topics, publish
from devstack.cognito_stub import Call

NO_BUDGET = 10_000.0  # the settings' ceiling: far above what one process can call
ROUNDS = 3


async def raw_efficiency(bench: Bench) -> list[Figure]:
    requests = bench.params.raw_requests
    bare: list[tuple[float, float]] = []
    worker: list[tuple[float, float]] = []
    for round_ in range(ROUNDS):
        await bench.fresh_stub()
        bare.append(await _bare(bench, requests))
        await bench.fresh_stub()
        worker.append(await _worker(bench, requests, round_))
    rate, bare_rate = max(r for r, _ in worker), max(r for r, _ in bare)
    cpu, bare_cpu = min(c for _, c in worker), min(c for _, c in bare)
    return [
        Figure(
            "throughput, no budget / bare 64-task loop",
            f"{rate / bare_rate:.3f}",
            ">= 0.80",
            rate / bare_rate >= 0.80,
            {
                "worker_calls_per_s": [round(r) for r, _ in worker],
                "bare_calls_per_s": [round(r) for r, _ in bare],
                "requests": requests,
            },
        ),
        Figure(
            "CPU per call / bare loop's",
            f"{cpu / bare_cpu:.3f}",
            "<= 1.25",
            cpu / bare_cpu <= 1.25,
            {
                "worker_cpu_ms_per_call": [round(c * 1000, 4) for _, c in worker],
                "bare_cpu_ms_per_call": [round(c * 1000, 4) for _, c in bare],
            },
        ),
    ]


async def _worker(bench: Bench, requests: int, round_: int) -> tuple[float, float]:
    topics = await fresh_topics(bench.bootstrap, f"raw{round_}")
    await publish(bench.bootstrap, topics.topic, requests)
    worker = bench.worker(f"raw{round_}", topics, NO_BUDGET, "--until-idle", "2")
    watch = Watch(worker, bench.broker_port, every=0.2)
    try:
        await watch.until(lambda: not worker.alive(), 120 + requests / 100)
    finally:
        worker.stop()
    return _middle(await bench.calls(), watch)


class _BareProc:
    """The bare loop as a process, with the same `sample()` a worker has."""

    def __init__(self, endpoint: str, requests: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.client", endpoint, "--requests", str(requests)],
            stdout=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> Sample:
        return Sample(time.monotonic(), rss_bytes(self.pid), cpu_seconds(self.pid))


async def _bare(bench: Bench, requests: int) -> tuple[float, float]:
    bare = _BareProc(bench.stub.endpoint_url, requests)
    watch = Watch(bare, bench.broker_port, every=0.2)
    try:
        await watch.until(lambda: not bare.alive(), 120 + requests / 100)
    finally:
        if bare.alive():
            bare.proc.kill()
        bare.proc.wait()
    return _middle(await bench.calls(), watch)


def _middle(calls: list[Call], watch: Watch) -> tuple[float, float]:
    """Calls per second and CPU seconds per call between the 10th and the 90th percentile call."""
    times = sorted(c.mono for c in calls)
    first, last = times[len(times) // 10], times[len(times) * 9 // 10]
    count = len(times) * 9 // 10 - len(times) // 10
    cpu = watch.cpu_at(last) - watch.cpu_at(first)
    return count / (last - first), cpu / count
