"""Long faults through a real broker, with the worker as its own process and the Cognito stub.

A lone request through a 60 s Cognito outage, a dead-letter topic that refuses every write and is
then fixed, kill -9 at random moments of a fast drain, a broker that goes down and comes back,
and a missing topic at start-up. In each: nothing lost, and every request ends exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devstack import broker as local_broker
from devstack.cognito_stub import StubProcess
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

pytestmark = pytest.mark.integration

POOL = "us-east-1_Faults"
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
UNWRITABLE_BYTES = 100  # below even a dead letter without its value, with its headers
COMMIT_INTERVAL = Settings.model_fields["commit_interval_seconds"].default


def admin_request(event_id: str, username: str | None = None) -> tuple[bytes, bytes]:
    value = {"event_id": event_id, "user_pool_id": POOL, "username": username or event_id}
    return event_id.encode(), json.dumps(value).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def create_topics(bootstrap: str, names: Names, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(names.topic, partitions, 1)]
            + [NewTopic(name, 1, 1) for name in (names.dlq, names.results)]
        )
    finally:
        await admin.close()


def fresh_names() -> Names:
    run = uuid.uuid4().hex[:10]
    return Names(f"req-{run}", f"req-{run}.dlq", f"req-{run}.results", f"group-{run}")


@dataclass
class Rig:
    """One broker, one set of topics, workers as processes; what reached the topics."""

    bootstrap: str
    names: Names
    logs: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def settings(self, endpoint: str, **overrides: Any) -> Settings:
        return settings_for(self.bootstrap, endpoint, self.names, **overrides)

    def start(self, name: str, settings: Settings, *args: str) -> WorkerProcess:
        worker = WorkerProcess(env_for(settings), self.logs / f"{name}.log", *args)
        self.started.append(worker)
        return worker

    async def results(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in await read_all(self.bootstrap, self.names.results)]

    async def wait_for_results(self, event_ids: set[str], within: float) -> list[dict[str, Any]]:
        async with asyncio.timeout(within):
            while True:
                results = await self.results()
                if event_ids <= {r["event_id"] for r in results}:
                    return results
                await asyncio.sleep(0.5)

    async def dead_letters(self) -> list[Any]:
        return await read_all(self.bootstrap, self.names.dlq)

    async def committed_and_ends(self) -> tuple[dict[int, int], dict[int, int]]:
        return await committed_and_ends(self.bootstrap, self.names.group, self.names.topic)


@pytest.fixture
async def rig(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Rig]:
    names = fresh_names()
    await create_topics(kafka_bootstrap, names)
    made = Rig(kafka_bootstrap, names, tmp_path)
    try:
        yield made
    finally:
        for worker in made.started:
            worker.kill()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def http_port(worker: WorkerProcess, within: float = 30) -> int:
    async with asyncio.timeout(within):
        while True:
            for line in worker.log_lines():
                if line["msg"] == "serving /metrics /healthz /readyz":
                    return int(line["port"])
            await asyncio.sleep(0.2)


async def status(http: aiohttp.ClientSession, port: int, path: str) -> int:
    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status


async def until_status(
    http: aiohttp.ClientSession, port: int, path: str, wanted: int, within: float
) -> None:
    async with asyncio.timeout(within):
        while await status(http, port, path) != wanted:  # noqa: ASYNC110 - polls a probe
            await asyncio.sleep(0.2)


async def metric_sum(http: aiohttp.ClientSession, port: int, name: str) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def assert_one_outcome_each(results: list[dict[str, Any]], event_ids: set[str]) -> None:
    counts = Counter(r["event_id"] for r in results)
    assert set(counts) == event_ids
    assert set(counts.values()) == {1}, [e for e, n in counts.items() if n > 1]


async def until_committed(rig: Rig, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            committed, ends = await rig.committed_and_ends()
            if committed == ends:
                return
            await asyncio.sleep(0.5)


# -- a lone request through a 60 s Cognito outage ----------------------------------------------


@pytest.mark.timeout(150)
async def test_a_lone_request_waits_out_a_60s_outage_and_is_signed_out_not_dead_lettered(
    rig: Rig,
) -> None:
    port = free_port()
    stub = await StubProcess({"seed": 1}, port=port).start()
    try:
        # Production's backoff ceiling is 10 s; 2 s here gives the outage many more attempts.
        settings = rig.settings(stub.endpoint_url, retry={"max_delay_seconds": 2.0})
        worker = rig.start("worker", settings)
        await publish(rig.bootstrap, rig.names.topic, [admin_request("warm-up")])
        await rig.wait_for_results({"warm-up"}, within=60)
        await stub.stop()  # nothing listens on the port now: every connection is refused
        await publish(rig.bootstrap, rig.names.topic, [admin_request("lone")])
        await asyncio.sleep(60)
        assert worker.proc.poll() is None
        assert [r for r in await rig.results() if r["event_id"] == "lone"] == []
        stub = await StubProcess({"seed": 1}, port=port).start()
        results = await rig.wait_for_results({"warm-up", "lone"}, within=30)
    finally:
        await stub.stop()
    (lone,) = [r for r in results if r["event_id"] == "lone"]
    assert (lone["outcome"], lone["reason"]) == ("signed_out", "admin_sign_out")
    attempts = lone["attempts"]
    assert attempts > 10  # more than SIGNOUT_RETRY__MAX_ATTEMPTS: none of them counted
    print(f"lone request: signed out after {attempts} attempts through a 60 s outage")
    assert await rig.dead_letters() == []
    assert_one_outcome_each(results, {"warm-up", "lone"})
    await until_committed(rig, within=10)  # the result is written just before the commit


# -- a dead-letter topic that refuses every write, then is fixed -------------------------------


async def set_dlq_max_bytes(bootstrap: str, topic: str, size: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(size)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


def batch(prefix: str, count: int, bad_every: int) -> tuple[list[tuple[bytes, bytes]], set[str]]:
    """`count` requests; every `bad_every`-th is for an unknown user (a dead letter)."""
    records, bad = [], set()
    for i in range(count):
        event_id = f"{prefix}-{i:03d}"
        if i % bad_every == 0:
            bad.add(event_id)
        records.append(
            admin_request(event_id, f"missing-{event_id}" if i % bad_every == 0 else None)
        )
    return records, bad


@pytest.mark.timeout(240)
async def test_an_unwritable_dlq_makes_the_worker_unready_then_it_resumes_by_itself(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    first, first_bad = batch("a", 20, 4)
    second, second_bad = batch("b", 30, 3)
    unknown = sorted(f"{POOL}/missing-{e}" for e in first_bad | second_bad)
    async with StubProcess({"seed": 2, "unknown_users": unknown}) as stub:
        settings = rig.settings(stub.endpoint_url, max_in_flight=8, rate={"per_second": 50})
        worker = rig.start("worker", settings)
        port = await http_port(worker)
        await publish(rig.bootstrap, rig.names.topic, first)
        await rig.wait_for_results({k.decode() for k, _ in first}, within=60)
        assert len(await rig.dead_letters()) == len(first_bad)
        assert await status(http, port, "/readyz") == 200

        await set_dlq_max_bytes(rig.bootstrap, rig.names.dlq, UNWRITABLE_BYTES)
        await publish(rig.bootstrap, rig.names.topic, second)
        await until_status(http, port, "/readyz", 503, within=60)
        errors = await metric_sum(http, port, "signout_dlq_write_errors_total")
        stalled = await metric_sum(http, port, "signout_commit_stall_seconds")
        assert errors > 0
        assert await status(http, port, "/healthz") == 200  # not ready, but not restarted

        await set_dlq_max_bytes(rig.bootstrap, rig.names.dlq, DEFAULT_MAX_MESSAGE_BYTES)
        every = {k.decode() for k, _ in first + second}
        results = await rig.wait_for_results(every, within=150)
        await until_status(http, port, "/readyz", 200, within=30)
        assert worker.proc.poll() is None  # resumed by itself: no restart
    print(f"DLQ broken: {errors:.0f} write errors counted, commit stall {stalled:.1f}s at the time")
    assert_one_outcome_each(results, every)
    dead = [r for r in results if r["outcome"] == "dead_lettered"]
    assert {r["event_id"] for r in dead} == first_bad | second_bad
    letters = Counter(r.key.decode() for r in await rig.dead_letters())
    assert set(letters) == first_bad | second_bad
    assert set(letters.values()) == {1}
    await eventually_committed(rig)


async def eventually_committed(rig: Rig) -> None:
    """The last finished record is committed within a commit interval of its result."""
    async with asyncio.timeout(30):
        while True:
            committed, ends = await rig.committed_and_ends()
            if committed == ends:
                return
            await asyncio.sleep(0.2)


# -- kill -9 at random moments of a fast drain -------------------------------------------------

KILL_REQUESTS = 2_000
KILL_BUDGET = 200.0
KILLS = 3


@pytest.mark.timeout(200)
async def test_kill_9_redoes_at_most_in_flight_plus_a_fifth_of_a_second_of_budget(
    kafka_bootstrap: str, tmp_path: Path, worker_processes: list[WorkerProcess]
) -> None:
    names = fresh_names()
    await create_topics(kafka_bootstrap, names, partitions=6)
    rig = Rig(kafka_bootstrap, names, tmp_path, worker_processes)
    event_ids = [f"k-{i:04d}" for i in range(KILL_REQUESTS)]
    await publish(kafka_bootstrap, names.topic, [admin_request(e) for e in event_ids])
    rng = random.Random()
    latency = {"dist": "uniform", "min_ms": 5, "max_ms": 40}
    async with StubProcess({"seed": 3, "latency": latency}) as stub:
        settings = rig.settings(
            stub.endpoint_url,
            rate={"per_second": KILL_BUDGET},
            commit_interval_seconds=COMMIT_INTERVAL,
            kafka={"session_timeout_ms": 6_000},
        )
        boundaries = []
        for kill in range(KILLS):
            worker = rig.start(f"run-{kill}", settings)
            before = (await stub.stats()).total
            moment = rng.randint(150, 450)  # calls into this run: a random moment of the drain
            async with asyncio.timeout(60):
                while (await stub.stats()).total < before + moment:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            worker.proc.kill()
            worker.proc.wait()
            boundaries.append((await stub.stats()).total)
        last = rig.start("last", settings, "--until-idle", "2")
        assert await last.wait(within=120) == 0
        calls = await stub.calls()
    seen: set[str] = set()
    duplicates = [0] * KILLS
    for call in calls:
        run = sum(call.seq >= b for b in boundaries)  # 0 before the first kill, i after kill i
        if call.target in seen and run > 0:
            duplicates[run - 1] += 1
        seen.add(call.target)
    bound = settings.max_in_flight + KILL_BUDGET / 5
    print(f"duplicates per kill -9 at {KILL_BUDGET:.0f}/s: {duplicates} (bound {bound:.0f})")
    assert seen == {f"{POOL}/{e}" for e in event_ids}  # nothing lost
    assert all(c.result == "ok" for c in calls)
    assert max(duplicates) <= bound
    committed, ends = await rig.committed_and_ends()
    assert committed == ends


# -- the broker goes down and comes back -------------------------------------------------------


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_broker.Broker]:
    """A broker of this test's own: it is taken down, so no other test may share it."""
    if local_broker._external_bootstrap():
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is set: no broker of our own to take down")
    broker = local_broker.start(tmp_path_factory.mktemp("outage-kafka"), die_with_parent=True)
    try:
        yield broker
    finally:
        broker.stop()


OUTAGE_SECONDS = 10
MAX_AIOKAFKA_LINES = 20


@pytest.mark.timeout(240)
async def test_a_broker_outage_logs_a_few_lines_and_the_worker_recovers_losing_nothing(
    own_broker: local_broker.Broker, tmp_path: Path
) -> None:
    names = fresh_names()
    bootstrap = own_broker.bootstrap
    await create_topics(bootstrap, names, partitions=2)
    rig = Rig(bootstrap, names, tmp_path)
    event_ids = [f"o-{i:03d}" for i in range(300)]
    await publish(bootstrap, names.topic, [admin_request(e) for e in event_ids])
    try:
        async with StubProcess({"seed": 4}) as stub:
            worker = rig.start("worker", rig.settings(stub.endpoint_url, rate={"per_second": 20}))
            async with asyncio.timeout(60):
                while (await stub.stats()).total < 40:  # noqa: ASYNC110 - mid-drain
                    await asyncio.sleep(0.2)
            await asyncio.to_thread(own_broker.halt)
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(own_broker.resume)
            wanted = {f"{POOL}/{e}" for e in event_ids}
            async with asyncio.timeout(90):
                while not wanted <= {c.target for c in await stub.calls() if c.result == "ok"}:  # noqa: ASYNC110 - polls the stub
                    await asyncio.sleep(0.5)
            await until_committed(rig, within=60)
            calls = await stub.calls()
            worker.terminate()
            assert await worker.wait(within=30) == 0
    finally:
        for started in rig.started:
            started.kill()
    assert {c.target for c in calls if c.result == "ok"} == wanted  # nothing lost
    lines = worker.log_lines()
    library = [line for line in lines if line["logger"].startswith("aiokafka")]
    counted = [line["msg"] for line in library if "more like this" in line["msg"]]
    print(f"aiokafka lines for a {OUTAGE_SECONDS}s broker outage: {len(library)}")
    for line in library:
        print(f"  {line['level']} {line['logger']}: {line['msg'][:160]}")
    assert library, "the outage went unnoticed in the log"
    assert len(library) <= MAX_AIOKAFKA_LINES
    assert counted, "the dropped repeats were never counted"


# -- start-up against a missing topic ----------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_missing_dlq_topic_ends_start_up_with_one_line_and_exit_1(rig: Rig) -> None:
    rig.names.dlq = f"missing-{uuid.uuid4().hex[:8]}"
    settings = rig.settings("http://127.0.0.1:9", startup_timeout_seconds=10)
    worker = rig.start("worker", settings)
    assert await worker.wait(within=30) == 1
    text = worker.log_path.read_text()
    assert "Traceback" not in text
    assert f'signout-worker: kafka: topic "{rig.names.dlq}" does not exist' in text
