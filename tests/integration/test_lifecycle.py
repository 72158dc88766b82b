"""SIGTERM during a backlog and a second worker joining: nothing lost, nothing committed early.

The workers run as their own processes (`python -m worker run`), configured by SIGNOUT_* variables,
against the real broker and moto. Admin sign-outs are used because Cognito accepts them again for
the same user, so a redelivered record shows up as a second result, not as a dead letter.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.moto import MotoServer, Pool
from tests.conftest import PoolFactory, TopicFactory
from tests.integration.conftest import (
    Names,
    WorkerProcess,
    committed_and_ends,
    env_for,
    publish,
    read_all,
    settings_for,
)
from worker.settings import Settings

REQUESTS = 300


def admin_requests(pool: Pool) -> list[tuple[bytes | None, bytes]]:
    records: list[tuple[bytes | None, bytes]] = []
    for i, user in enumerate(pool.users[:REQUESTS]):
        event_id = f"ev-{i:04d}"
        value = {"event_id": event_id, "user_pool_id": pool.pool_id, "username": user.username}
        records.append((event_id.encode(), json.dumps(value).encode()))
    return records


@dataclass
class Fleet:
    """Workers in their own processes over one backlog of admin requests on 6 partitions."""

    bootstrap: str
    moto: MotoServer
    names: Names
    logs: Path
    started: list[WorkerProcess]

    def settings(self, per_second: float, **overrides: Any) -> Settings:
        rate = {"per_second": per_second}
        return settings_for(
            self.bootstrap,
            self.moto.endpoint_url,
            self.names,
            rate=rate,
            max_in_flight=16,
            **overrides,
        )

    def start(self, name: str, settings: Settings, *args: str) -> WorkerProcess:
        worker = WorkerProcess(env_for(settings), self.logs / f"{name}.log", *args)
        self.started.append(worker)
        return worker

    async def results(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in await read_all(self.bootstrap, self.names.results)]

    async def wait_for_results(self, count: int) -> None:
        async with asyncio.timeout(60):
            while len(await self.results()) < count:  # noqa: ASYNC110 - polls a topic
                await asyncio.sleep(0.5)

    async def committed_and_ends(self) -> tuple[dict[int, int], dict[int, int]]:
        return await committed_and_ends(self.bootstrap, self.names.group, self.names.topic)


@pytest.fixture
async def fleet(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    make_pool: PoolFactory,
    make_topic: TopicFactory,
    names: Names,
    tmp_path: Path,
    worker_processes: list[WorkerProcess],
) -> Fleet:
    pool = await make_pool(REQUESTS)
    names.topic = await make_topic("lifecycle", partitions=6)
    await publish(kafka_bootstrap, names.topic, admin_requests(pool))
    return Fleet(kafka_bootstrap, moto_server, names, tmp_path, worker_processes)


@pytest.mark.timeout(180)
async def test_sigterm_drains_commits_only_finished_records_and_a_restart_completes(
    fleet: Fleet,
) -> None:
    budget = 8.0
    settings = fleet.settings(30, shutdown_timeout_seconds=budget)
    first = fleet.start("first", settings)
    await fleet.wait_for_results(60)
    first.terminate()
    signalled = time.monotonic()
    assert await first.wait(within=budget + 20) == 0
    assert time.monotonic() - signalled < budget + 5, "exceeded the shutdown budget"

    finished = {r["event_id"] for r in await fleet.results()}
    committed, ends = await fleet.committed_and_ends()
    source = await read_all(fleet.bootstrap, fleet.names.topic)
    below_commit = [r.key.decode() for r in source if r.offset < committed.get(r.partition, 0)]
    assert set(below_commit) <= finished, "committed past a record that had not finished"
    assert sum(committed.values()) < REQUESTS, "the backlog was already drained: SIGTERM came late"

    second = fleet.start("second", settings, "--until-idle", "2")
    assert await second.wait(within=120) == 0
    signed_out = {r["event_id"] for r in await fleet.results() if r["outcome"] == "signed_out"}
    assert signed_out == {f"ev-{i:04d}" for i in range(REQUESTS)}
    assert await fleet.committed_and_ends() == (ends, ends)


@pytest.mark.timeout(180)
async def test_a_second_worker_joining_mid_run_loses_nothing(fleet: Fleet) -> None:
    settings = fleet.settings(40)
    first = fleet.start("a", settings, "--until-idle", "3")
    await fleet.wait_for_results(40)
    second = fleet.start("b", settings, "--until-idle", "3")
    assert await first.wait(within=120) == 0
    assert await second.wait(within=120) == 0

    results = await fleet.results()
    calls: Counter[str] = Counter()
    for result in results:
        calls[result["event_id"]] += result["attempts"]
    assert set(calls) == {f"ev-{i:04d}" for i in range(REQUESTS)}
    assert all(r["outcome"] == "signed_out" for r in results)
    most = max(calls.values())
    repeated = sum(c > 1 for c in calls.values())
    print(f"calls per request after a join: max {most}, repeated {repeated}")
    assert most <= 2
    committed, ends = await fleet.committed_and_ends()
    assert committed == ends
