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
from pathlib import Path
from typing import Any

import pytest

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
from worker.sandbox import MotoServer, Pool
from worker.settings import Settings

REQUESTS = 300


def admin_requests(pool: Pool) -> list[tuple[bytes | None, bytes]]:
    records: list[tuple[bytes | None, bytes]] = []
    for i, user in enumerate(pool.users[:REQUESTS]):
        event_id = f"ev-{i:04d}"
        value = {"event_id": event_id, "user_pool_id": pool.pool_id, "username": user.username}
        records.append((event_id.encode(), json.dumps(value).encode()))
    return records


async def results_by_event(bootstrap: str, names: Names) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await read_all(bootstrap, names.results)]


async def wait_for_results(bootstrap: str, names: Names, count: int) -> None:
    async with asyncio.timeout(60):
        while len(await results_by_event(bootstrap, names)) < count:  # noqa: ASYNC110 - polls a topic
            await asyncio.sleep(0.5)


def worker_settings(
    bootstrap: str, moto: MotoServer, names: Names, per_second: float, **overrides: Any
) -> Settings:
    """Admin requests drained at `per_second` with 16 records in flight per worker."""
    rate = {"per_second": per_second}
    return settings_for(
        bootstrap, moto.endpoint_url, names, rate=rate, max_in_flight=16, **overrides
    )


@pytest.fixture
async def backlog(
    kafka_bootstrap: str, make_pool: PoolFactory, make_topic: TopicFactory, names: Names
) -> list[tuple[bytes | None, bytes]]:
    pool = await make_pool(REQUESTS)
    names.topic = await make_topic("lifecycle", partitions=6)
    records = admin_requests(pool)
    await publish(kafka_bootstrap, names.topic, records)
    return records


@pytest.mark.timeout(180)
async def test_sigterm_drains_commits_only_finished_records_and_a_restart_completes(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    backlog: list[tuple[bytes | None, bytes]],
    names: Names,
    tmp_path: Path,
    worker_processes: list[WorkerProcess],
) -> None:
    budget = 8.0
    settings = worker_settings(
        kafka_bootstrap, moto_server, names, 30, shutdown_timeout_seconds=budget
    )
    first = WorkerProcess(env_for(settings), tmp_path / "first.log")
    worker_processes.append(first)
    await wait_for_results(kafka_bootstrap, names, 60)
    first.terminate()
    signalled = time.monotonic()
    assert await first.wait(within=budget + 20) == 0
    assert time.monotonic() - signalled < budget + 5, "exceeded the shutdown budget"

    finished = {r["event_id"] for r in await results_by_event(kafka_bootstrap, names)}
    committed, ends = await committed_and_ends(kafka_bootstrap, names.group, names.topic)
    source = await read_all(kafka_bootstrap, names.topic)
    below_commit = [r.key.decode() for r in source if r.offset < committed.get(r.partition, 0)]
    assert set(below_commit) <= finished, "committed past a record that had not finished"
    assert sum(committed.values()) < REQUESTS, "the backlog was already drained: SIGTERM came late"

    second = WorkerProcess(env_for(settings), tmp_path / "second.log", "--until-idle", "2")
    worker_processes.append(second)
    assert await second.wait(within=120) == 0
    results = await results_by_event(kafka_bootstrap, names)
    signed_out = {r["event_id"] for r in results if r["outcome"] == "signed_out"}
    assert signed_out == {f"ev-{i:04d}" for i in range(REQUESTS)}
    assert await committed_and_ends(kafka_bootstrap, names.group, names.topic) == (ends, ends)


@pytest.mark.timeout(180)
async def test_a_second_worker_joining_mid_run_loses_nothing(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    backlog: list[tuple[bytes | None, bytes]],
    names: Names,
    tmp_path: Path,
    worker_processes: list[WorkerProcess],
) -> None:
    settings = worker_settings(kafka_bootstrap, moto_server, names, 40)
    env = env_for(settings)
    first = WorkerProcess(env, tmp_path / "a.log", "--until-idle", "3")
    worker_processes.append(first)
    await wait_for_results(kafka_bootstrap, names, 40)
    second = WorkerProcess(env, tmp_path / "b.log", "--until-idle", "3")
    worker_processes.append(second)
    assert await first.wait(within=120) == 0
    assert await second.wait(within=120) == 0

    results = await results_by_event(kafka_bootstrap, names)
    calls = Counter()
    for result in results:
        calls[result["event_id"]] += result["attempts"]
    assert set(calls) == {f"ev-{i:04d}" for i in range(REQUESTS)}
    assert all(r["outcome"] == "signed_out" for r in results)
    most = max(calls.values())
    print(
        f"calls per request after a join: max {most}, repeated {sum(c > 1 for c in calls.values())}"
    )
    assert most <= 2
    committed, ends = await committed_and_ends(kafka_bootstrap, names.group, names.topic)
    assert committed == ends
