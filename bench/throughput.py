"""No budget: the worker against a bare 64-task aiobotocore loop, both at once, each with its stub.

The two run as their own processes *at the same time*, each against a stub of its own with the same
latency, and are measured the same way: calls per second from their stub's timestamps and CPU from
/proc, both over the same stretch of time, where both are in their middle 80% of calls (start-up,
imports and the tail are left out of both). On this shared machine the speed of the same code
drifts by a factor of two or more from one half-minute to the next (seen: the bare loop's CPU per
call at 0.55 and 1.33 ms in one run), so one after the other compares two different machines. At
the same time both meet the same machine: the comparison is the ratio of each round, and the
figure the median of the rounds' ratios. Two busy processes with two stubs and a broker share two
cores, so each gets less than a core; the ratio is what is compared, not the rates.
"""

from __future__ import annotations

import asyncio
import bisect
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.figures import Figure
from bench.procs import Sample, cpu_seconds, die_with_parent, rss_bytes
from bench.run import STUB_LATENCY, Bench, Watch, first_call
from bench.stack import fresh_topics, publish
from devstack.cognito_stub import Call, StubProcess

NO_BUDGET = 10_000.0  # the settings' ceiling: far above what one process can call
ROUNDS = 3
MIN_OVERLAP_SECONDS = 2.0


@dataclass(frozen=True)
class Side:
    calls_per_s: float
    cpu_per_call: float  # seconds


@dataclass(frozen=True)
class Round:
    worker: Side
    bare: Side
    seconds: float  # the stretch both were measured over

    @property
    def rate_ratio(self) -> float:
        return self.worker.calls_per_s / self.bare.calls_per_s

    @property
    def cpu_ratio(self) -> float:
        return self.worker.cpu_per_call / self.bare.cpu_per_call


async def raw_efficiency(bench: Bench) -> list[Figure]:
    requests = bench.params.raw_requests
    rounds: list[Round] = []
    async with StubProcess({"seed": 14, "latency": STUB_LATENCY}) as bare_stub:
        for round_ in range(ROUNDS):
            await bench.fresh_stub()
            await bare_stub.reset()
            rounds.append(await _side_by_side(bench, bare_stub, requests, round_))
    rate = statistics.median(r.rate_ratio for r in rounds)
    cpu = statistics.median(r.cpu_ratio for r in rounds)
    return [
        Figure(
            "throughput, no budget / bare 64-task loop",
            f"{rate:.3f}",
            ">= 0.80",
            rate >= 0.80,
            {
                "ratios": [round(r.rate_ratio, 3) for r in rounds],
                "worker_calls_per_s": [round(r.worker.calls_per_s) for r in rounds],
                "bare_calls_per_s": [round(r.bare.calls_per_s) for r in rounds],
                "seconds": [round(r.seconds, 1) for r in rounds],
                "requests": requests,
            },
        ),
        Figure(
            "CPU per call / bare loop's",
            f"{cpu:.3f}",
            "<= 1.25",
            cpu <= 1.25,
            {
                "ratios": [round(r.cpu_ratio, 3) for r in rounds],
                "worker_cpu_ms_per_call": [round(r.worker.cpu_per_call * 1000, 4) for r in rounds],
                "bare_cpu_ms_per_call": [round(r.bare.cpu_per_call * 1000, 4) for r in rounds],
            },
        ),
    ]


async def _side_by_side(bench: Bench, bare_stub: StubProcess, requests: int, round_: int) -> Round:
    """The bare loop waits, ready, until the worker's first call, then both go."""
    topics = await fresh_topics(bench.bootstrap, f"raw{round_}")
    await publish(bench.bootstrap, topics.topic, requests)
    bare = _BareProc(bare_stub.endpoint_url, requests)
    worker = None
    try:
        await bare.ready(within=60)
        worker = bench.worker(f"raw{round_}", topics, NO_BUDGET, "--until-idle", "2")
        await first_call(bench)
        bare.go()
        watches = Watch(worker, bench.broker_port, every=0.2), Watch(bare, bench.broker_port, 0.2)
        within = 120 + requests / 100
        await asyncio.gather(*(_until_exit(w, within) for w in watches))
    finally:
        bare.stop()
        if worker is not None:
            worker.stop()
    return _overlap((await bench.calls(), watches[0]), (await bare_stub.calls(), watches[1]))


async def _until_exit(watch: Watch, within: float) -> None:
    await watch.until(lambda: not watch.worker.alive(), within)


class _BareProc:
    """The bare loop as a process, with the same `sample()` a worker has."""

    def __init__(self, endpoint: str, requests: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.client", endpoint, "--requests", str(requests), "--wait"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.pid = self.proc.pid

    async def ready(self, within: float) -> None:
        assert self.proc.stdout is not None  # noqa: S101 - stdout=PIPE above
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), within)
        if line.strip() != b"ready":
            raise RuntimeError(f"bare loop did not start: {line!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None  # noqa: S101 - stdin=PIPE above
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> Sample:
        return Sample(time.monotonic(), rss_bytes(self.pid), cpu_seconds(self.pid))

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()


def _overlap(*sides: tuple[list[Call], Watch]) -> Round:
    """Each side's calls per second and CPU per call over the stretch where every side is between
    its 10th and its 90th percentile call."""
    times = [sorted(c.mono for c in calls) for calls, _ in sides]
    start = max(t[len(t) // 10] for t in times)
    end = min(t[len(t) * 9 // 10] for t in times)
    if end - start < MIN_OVERLAP_SECONDS:
        raise RuntimeError(f"the two ran together for only {end - start:.1f} s")
    measured = []
    for t, (_, watch) in zip(times, sides, strict=True):
        count = bisect.bisect_right(t, end) - bisect.bisect_left(t, start)
        cpu = watch.cpu_at(end) - watch.cpu_at(start)
        measured.append(Side(count / (end - start), cpu / count))
    return Round(measured[0], measured[1], end - start)
