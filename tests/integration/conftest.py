"""Helpers for pipeline tests: publish, read a topic to its end, read a group's commits, and run
the worker in-process or as its own process (`python -m worker run`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from worker.app import RunOptions, Worker
from worker.metrics import Metrics
from worker.settings import Settings


@dataclass
class Names:
    topic: str
    dlq: str
    results: str
    group: str


@pytest.fixture
async def names(kafka_bootstrap: str) -> Names:
    """Fresh names, their topics created: the worker checks they exist and never creates them."""
    run = uuid.uuid4().hex[:10]
    named = Names(f"req-{run}", f"req-{run}.dlq", f"req-{run}.results", f"group-{run}")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, 1, 1) for name in (named.topic, named.dlq, named.results)]
        )
    finally:
        await admin.close()
    return named


def settings_for(bootstrap: str, endpoint_url: str, names: Names, **overrides: Any) -> Settings:
    document: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic": names.topic,
            "dlq_topic": names.dlq,
            "results_topic": names.results,
            "group_id": names.group,
            "session_timeout_ms": 10_000,
        },
        "cognito": {"endpoint_url": endpoint_url, "region": "us-east-1", "timeout_seconds": 5},
        "rate": {"per_second": 500},
        "retry": {"base_delay_seconds": 0.05, "max_delay_seconds": 0.5},
        "commit_interval_seconds": 0.5,
        "http": {"host": "127.0.0.1", "port": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            document.setdefault(key, {}).update(value)
        else:
            document[key] = value
    return Settings.model_validate(document)


def env_for(settings: Settings) -> dict[str, str]:
    """The same settings as SIGNOUT_* variables, for a worker in its own process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOUT_")}
    for section, values in settings.model_dump(mode="json").items():
        if isinstance(values, dict):
            for key, value in values.items():
                if value is not None:
                    env[f"SIGNOUT_{section}__{key}".upper()] = _env_value(value)
        else:
            env[f"SIGNOUT_{section}".upper()] = _env_value(values)
    return env


def _env_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


async def run_in_process(settings: Settings, until_idle: float = 1.0) -> Metrics:
    metrics = Metrics()
    worker = Worker(settings, metrics)
    await asyncio.wait_for(worker.run(RunOptions(until_idle_seconds=until_idle)), 180)
    return metrics


async def publish(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [await producer.send(topic, v, key=k, headers=headers) for k, v in records]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic`, up to its end offsets at the time of the call."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while not consumer.assignment():
                records += _flatten(await consumer.getmany(timeout_ms=200))
            ends = await consumer.end_offsets(list(consumer.assignment()))
            while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                records += _flatten(await consumer.getmany(timeout_ms=500))
    finally:
        await consumer.stop()
    return records


def _flatten(batch: dict[Any, list[Any]]) -> list[Any]:
    return [m for messages in batch.values() for m in messages]


async def committed_and_ends(
    bootstrap: str, group: str, topic: str
) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offsets and the topic's end offsets, by partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        return committed, {tp.partition: end for tp, end in ends.items()}
    finally:
        await consumer.stop()
        await admin.close()


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


class WorkerProcess:
    """`python -m worker run` in its own process, its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", *args], env=env, stdout=log, stderr=log
            )

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, within: float) -> int:
        deadline = asyncio.get_running_loop().time() + within
        while self.proc.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                self.proc.kill()
                raise TimeoutError(f"worker did not exit within {within}s")
            await asyncio.sleep(0.1)
        return self.proc.returncode

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def worker_processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()
