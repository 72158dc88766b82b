"""What every scenario shares: the parameters, the broker, the stub, a log folder, and the waits."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.procs import Sample, WorkerProc, received_from, worker_env
from bench.stack import Topics
from devstack.cognito_stub import Call, StubProcess

# Every sign-out the stub answers takes this long (Cognito's own is tens of milliseconds).
STUB_LATENCY = {"dist": "normal", "mean_ms": 30, "stddev_ms": 10, "min_ms": 10, "max_ms": 0}


@dataclass(frozen=True)
class Params:
    backlog: int  # records behind the long drain
    drain_seconds: float
    raw_requests: int  # requests in the no-budget throughput comparison
    urgent_bulk: int  # bulk records behind the urgent-lane scenarios

    @classmethod
    def from_env(cls) -> Params:
        full = os.environ.get("BENCH_FULL", "") not in ("", "0")
        return cls(
            backlog=int(os.environ.get("BENCH_BACKLOG", 1_000_000 if full else 200_000)),
            drain_seconds=float(os.environ.get("BENCH_DRAIN_SECONDS", 300 if full else 60)),
            raw_requests=int(os.environ.get("BENCH_RAW_REQUESTS", 20_000 if full else 10_000)),
            urgent_bulk=int(os.environ.get("BENCH_URGENT_BULK", 10_000 if full else 2_000)),
        )


@dataclass
class Bench:
    params: Params
    bootstrap: str
    stub: StubProcess
    logs: Path

    @property
    def broker_port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

    def worker(
        self, name: str, topics: Topics, per_second: float, *args: str, **extra: str
    ) -> WorkerProc:
        env = worker_env(self.bootstrap, self.stub.endpoint_url, topics, per_second, **extra)
        return WorkerProc(env, self.logs / f"{name}.log", *args)

    async def fresh_stub(self, **config: object) -> None:
        """Forget earlier calls; the start-up configuration plus `config`."""
        await self.stub.reset()
        if config:
            await self.stub.configure(**config)

    async def calls(self) -> list[Call]:
        return await self.stub.calls()


async def wait_until(done: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(0.2)


async def first_call(bench: Bench, within: float = 60.0) -> float:
    """When the stub saw the first call of this scenario (its monotonic clock)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        calls = await bench.stub.calls()
        if calls:
            return min(c.mono for c in calls)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no call from the worker within {within:.0f} s")


async def at_time(when: float) -> None:
    await asyncio.sleep(max(when - time.monotonic(), 0))


async def wait_assigned(*workers: WorkerProc, within: float = 60.0) -> None:
    def ready() -> bool:
        for worker in workers:
            if not worker.alive():
                raise RuntimeError(f"worker exited early; see {worker.log_path}")
        return all(worker.assigned() for worker in workers)

    await wait_until(ready, within, "partitions assigned")


class Measured(Protocol):
    """A process under measurement: a worker or the bare loop."""

    pid: int

    def alive(self) -> bool: ...

    def sample(self) -> Sample: ...


class Watch:
    """Samples one process each `every` seconds: RSS, CPU and bytes received from the broker."""

    def __init__(self, worker: Measured, broker_port: int, every: float = 1.0) -> None:
        self.worker = worker
        self.samples: list[Sample] = []
        self.received: dict[str, int] = {}
        self._port = broker_port
        self._every = every

    def take(self) -> None:
        if not self.worker.alive():
            return
        try:
            self.samples.append(self.worker.sample())
            self.received.update(received_from(self.worker.pid, self._port))
        except (FileNotFoundError, ProcessLookupError):
            pass  # exited between the check and the read

    async def until(self, stop: Callable[[], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not stop() and time.monotonic() < deadline:
            self.take()
            await asyncio.sleep(self._every)
        self.take()

    def received_total(self) -> int:
        return sum(self.received.values())

    def cpu_at(self, at: float) -> float:
        """CPU seconds at `at`, interpolated between the samples around it."""
        points = self.samples
        for before, after in itertools.pairwise(points):
            if before.at <= at <= after.at:
                span = after.at - before.at or 1.0
                return before.cpu + (after.cpu - before.cpu) * (at - before.at) / span
        return points[-1].cpu if points and at > points[-1].at else points[0].cpu
