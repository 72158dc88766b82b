"""Each record is read from the broker once: bytes received per record under a budget.

While the window waits on the rate budget, the worker keeps what it fetched (in aiokafka's own
fetch result and in its buffer) instead of pausing partitions, which would make aiokafka drop the
prefetched records and fetch them again. Measured as the kernel's `bytes_received` on the worker
process's connections to the broker, sampled while it drains (a byte count, not a timing).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from bench.procs import received_from
from devstack.cognito_stub import StubProcess, make_token
from tests.integration.conftest import (
    Names,
    WorkerProcess,
    committed_and_ends,
    env_for,
    publish,
    settings_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RECORDS = 1_200
BUDGET = 150.0
# Everything that is not a record: metadata, group heartbeats, commits, empty fetches.
PROTOCOL_ALLOWANCE = 256 * 1024


async def test_each_record_is_fetched_once_under_a_budget(
    kafka_bootstrap: str, names: Names, tmp_path: Path, worker_processes: list[WorkerProcess]
) -> None:
    if shutil.which("ss") is None:
        if os.environ.get("CI"):
            pytest.fail("ss (iproute2) is missing: .ci/run installs it")
        pytest.skip("needs ss (iproute2)")
    values = [
        json.dumps({"event_id": f"f-{i:05d}", "access_token": make_token()}).encode()
        for i in range(RECORDS)
    ]
    await publish(kafka_bootstrap, names.topic, [(v[:24], v) for v in values])
    record_bytes = sum(len(v) + 24 for v in values)
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    async with StubProcess({"seed": 5}) as stub:
        settings = settings_for(
            kafka_bootstrap, stub.endpoint_url, names, rate={"per_second": BUDGET}
        )
        worker = WorkerProcess(env_for(settings), tmp_path / "worker.log", "--until-idle", "2")
        worker_processes.append(worker)
        seen: dict[str, int] = {}
        while worker.proc.poll() is None:
            counts = await asyncio.to_thread(received_from, worker.proc.pid, port)
            for conn, count in counts.items():
                seen[conn] = max(seen.get(conn, 0), count)
            await asyncio.sleep(0.2)
        assert worker.proc.returncode == 0
    committed, ends = await committed_and_ends(kafka_bootstrap, names.group, names.topic)
    assert committed == ends
    received = sum(seen.values())
    print(f"{received} bytes received for {record_bytes} bytes of records")
    assert received <= 2 * record_bytes + PROTOCOL_ALLOWANCE
