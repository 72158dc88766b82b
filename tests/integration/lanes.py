"""Requests for a given Region published with their publish time, a worker process configured for
Regions and lanes, and what the stubs saw: time to revoke and the busiest second per Region.

Time to revoke is a stub's arrival time of the call minus the request's publish time (both on
CLOCK_MONOTONIC); the stub records a call before sleeping its latency, so the latency is left out.
"""

from __future__ import annotations

import bisect
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.measure import arrivals, percentile
from devstack.cognito_stub import OK, Call, fingerprint, make_token
from tests.integration.conftest import WorkerProcess, env_for
from worker.settings import Settings


def issuer(region: str) -> str:
    return f"https://cognito-idp.{region}.amazonaws.com/{region}_LanesPool"


def request(region: str, name: str) -> tuple[str, bytes, bytes]:
    """(token, key, value) of one sign-out request for a user of `region`."""
    token = make_token(username=name, iss=issuer(region))
    value = {"event_id": f"{name}-{uuid.uuid4().hex[:8]}", "access_token": token}
    return token, name.encode(), json.dumps(value).encode()


def requests(region: str, prefix: str, count: int) -> list[tuple[str, bytes, bytes]]:
    return [request(region, f"{prefix}-{i}") for i in range(count)]


@dataclass
class TimedPublisher:
    """Publishes one request at a time and keeps when each was sent, by token fingerprint."""

    bootstrap: str
    published: dict[str, float] = field(default_factory=dict)

    async def __aenter__(self) -> TimedPublisher:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=0)
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, token: str, key: bytes, value: bytes) -> None:
        self.published[fingerprint(token)] = time.monotonic()
        await self._producer.send_and_wait(topic, value, key=key)

    async def backlog(self, topic: str, batch: Iterable[tuple[str, bytes, bytes]]) -> None:
        sends = [await self._producer.send(topic, v, key=k) for _, k, v in batch]
        for sent in sends:
            await sent


def ok_calls(calls: Iterable[Call]) -> list[Call]:
    return [c for c in calls if c.result == OK]


def revoke_times(calls: Iterable[Call], published: dict[str, float]) -> dict[str, float | None]:
    first: dict[str, float] = {}
    for call in ok_calls(calls):
        first.setdefault(call.target, call.mono)
    return arrivals(first, published)


def summary(name: str, times: dict[str, float | None]) -> str:
    seen = [t for t in times.values() if t is not None]
    missing = len(times) - len(seen)
    if not seen:
        return f"{name}: none of {len(times)} revoked"
    return (
        f"{name}: {len(seen)}/{len(times)} revoked,"
        f" time to revoke p50 {percentile(seen, 50):.3f} s, p99 {percentile(seen, 99):.3f} s,"
        f" max {max(seen):.3f} s" + (f", {missing} not revoked" if missing else "")
    )


def start_worker(
    settings: Settings, log: Path, *, endpoints: dict[str, str] | None = None, **env: str
) -> WorkerProcess:
    """`python -m worker run` with `settings`, a Region -> endpoint map and extra variables."""
    variables = env_for(settings)
    if endpoints is not None:
        variables["SIGNOUT_COGNITO__ENDPOINT_URL"] = json.dumps(endpoints)
    variables.update(env)
    return WorkerProcess(variables, log)


def busiest_at(times: Iterable[float]) -> tuple[int, float]:
    """The most calls in any 1-s window [t, t + 1) and that window's start `t`."""
    ordered = sorted(times)
    best, at = 0, ordered[0] if ordered else 0.0
    for i, start in enumerate(ordered):
        count = bisect.bisect_left(ordered, start + 1.0, lo=i) - i
        if count > best:
            best, at = count, start
    return best, at
