"""`make demo`: the whole product on a local stack, in about a minute.

Starts a real Kafka broker and the Cognito emulator, seeds a user pool with real tokens, publishes
a mixed batch of requests, runs the worker with a one-line-per-second progress display, and ends
with a summary table and the dead letters (redacted). Everything it started stops, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack import broker
from devstack.moto import MotoServer, Pool, client_kwargs, seed_pool
from worker.app import RunOptions, Worker
from worker.logs import configure
from worker.metrics import Metrics
from worker.settings import Settings

REPO_ROOT = broker.REPO_ROOT
STATE = REPO_ROOT / ".demo"  # in the work tree, gitignored
PARTITIONS = 3


@dataclass
class Batch:
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    expected: Counter[str] = field(default_factory=Counter)

    def add(self, key: str | None, value: bytes, outcome: str, count: int = 1) -> None:
        self.records += [(key.encode() if key else None, value)] * count
        self.expected[outcome] += count


def main() -> int:
    try:
        return asyncio.run(run_demo())
    except KeyboardInterrupt:
        _say("\ninterrupted: everything the demo started has been stopped")
        return 130


async def run_demo() -> int:
    STATE.mkdir(exist_ok=True)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    async with AsyncExitStack() as stack:
        bootstrap, moto = await _start_stack(stack)
        pool = await seed_pool(moto.endpoint_url, 60, prefix="demo")
        settings = _settings(bootstrap, moto.endpoint_url)
        await _create_topics(settings)
        batch = await _batch(pool)
        await _publish(settings, batch.records)
        _say(f"published {len(batch.records)} requests to {settings.kafka.topic}")
        metrics = Metrics()
        await _run_worker(settings, metrics)
        _summary(metrics, batch.expected)
        await _show_dead_letters(settings)
    return 0


async def _start_stack(stack: AsyncExitStack) -> tuple[str, MotoServer]:
    _say("starting a local Kafka broker (the first run downloads its jars from Maven Central)")
    started = time.monotonic()
    # Main thread: the broker dies with this process, even after kill -9.
    kafka = broker.start(STATE / "kafka", die_with_parent=True)
    stack.callback(kafka.stop)
    _say(f"broker ready at {kafka.bootstrap} in {time.monotonic() - started:.1f}s")
    moto = await asyncio.to_thread(MotoServer, STATE / "moto.log")
    stack.callback(moto.stop)
    _say(f"Cognito emulator (moto) ready at {moto.endpoint_url}")
    return str(kafka.bootstrap), moto


def _settings(bootstrap: str, endpoint_url: str) -> Settings:
    run = uuid.uuid4().hex[:6]
    return Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": f"demo.requests.{run}",
                "dlq_topic": f"demo.requests.{run}.dlq",
                "group_id": f"demo-{run}",
            },
            "cognito": {"endpoint_url": endpoint_url, "region": "us-east-1"},
            "log": {"level": "INFO", "format": "json"},
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )


async def _create_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(settings.kafka.topic, PARTITIONS, 1),
                NewTopic(settings.kafka.dlq_topic, 1, 1),
            ]
        )
    finally:
        await admin.close()


def _request(token: str | None = None, **fields: Any) -> bytes:
    document = {"event_id": str(uuid.uuid4()), "source": "demo", **fields}
    if token is not None:
        document["access_token"] = token
    return json.dumps(document).encode()


def _fake_jwt(exp: float) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'demo'})}.{part({'exp': int(exp), 'sub': 'x'})}.c2ln"


async def _batch(pool: Pool) -> Batch:
    users = pool.users
    revoked = users[40:50]
    await _revoke([u.access_token for u in revoked], pool.endpoint_url)
    batch = Batch()
    _token_requests(batch, pool)
    _admin_requests(batch, pool)
    _local_failures(batch)
    return batch


def _token_requests(batch: Batch, pool: Pool) -> None:
    valid, revoked, fallback = pool.users[:40], pool.users[40:46], pool.users[46:50]
    for user in valid:
        batch.add(user.username, _request(user.access_token), "signed_out/global_sign_out")
    batch.add(valid[0].username, batch.records[0][1], "duplicate/duplicate_event", 3)
    for user in revoked:
        batch.add(user.username, _request(user.access_token), "dead_lettered/not_authorized")
    for user in fallback:
        value = _request(user.access_token, user_pool_id=pool.pool_id, username=user.username)
        batch.add(user.username, value, "signed_out/admin_fallback")


def _admin_requests(batch: Batch, pool: Pool) -> None:
    for user in pool.users[50:56]:
        value = _request(user_pool_id=pool.pool_id, username=user.username)
        batch.add(user.username, value, "signed_out/admin_sign_out")
    for i in range(3):
        value = _request(user_pool_id=pool.pool_id, username=f"ghost-{i}")
        batch.add(f"ghost-{i}", value, "dead_lettered/user_not_found")


def _local_failures(batch: Batch) -> None:
    for _ in range(4):
        batch.add(None, _request(_fake_jwt(time.time() - 3600)), "dead_lettered/token_expired")
    for bad in ("not-a-jwt", "a.b.c", "eyJhbGciOi.broken.sig"):
        batch.add(None, _request(bad), "dead_lettered/token_invalid")
    for garbage in (b"\x00\xffnot json", b"{}", b'{"event_id": "no-target"}', b"[1,2,3]"):
        batch.add(None, garbage, "dead_lettered/invalid_payload")


async def _revoke(tokens: list[str], endpoint_url: str) -> None:
    async with get_session().create_client("cognito-idp", **client_kwargs(endpoint_url)) as idp:
        for token in tokens:
            await idp.global_sign_out(AccessToken=token)


async def _publish(settings: Settings, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        sends = [await producer.send(settings.kafka.topic, v, key=k) for k, v in records]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _run_worker(settings: Settings, metrics: Metrics) -> None:
    log_file = STATE / "worker.log"
    with log_file.open("a") as stream:
        configure(settings.log.level, settings.log.format, stream)
        worker = Worker(settings, metrics)
        worker.install_signal_handlers()
        progress = asyncio.create_task(_progress(metrics))
        try:
            await worker.run(RunOptions(until_idle_seconds=1.5))
        finally:
            progress.cancel()
            with suppress(asyncio.CancelledError):
                await progress
            logging.getLogger().handlers.clear()
    _say(f"worker stopped (its JSON log: {log_file.relative_to(REPO_ROOT)})")


def _totals(metrics: Metrics) -> Counter[str]:
    totals: Counter[str] = Counter()
    for metric in metrics.registry.collect():
        if metric.name == "signout_events":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    totals[f"{sample.labels['outcome']}/{sample.labels['reason']}"] += int(
                        sample.value
                    )
    return totals


async def _progress(metrics: Metrics) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(1)
        totals = _totals(metrics)
        _say(_progress_line(time.monotonic() - started, totals, metrics))


def _progress_line(elapsed: float, totals: Counter[str], metrics: Metrics) -> str:
    done = Counter[str]()
    for key, value in totals.items():
        done[key.split("/")[0]] += value
    inflight = int(metrics.inflight._value.get())
    return (
        f"{elapsed:5.0f}s  signed_out {done['signed_out']:4d}  duplicate {done['duplicate']:3d}  "
        f"dead_lettered {done['dead_lettered']:3d}  in_flight {inflight:3d}"
    )


def _summary(metrics: Metrics, expected: Counter[str]) -> None:
    totals = _totals(metrics)
    _say("\n  outcome         reason                count")
    _say("  --------------  --------------------  -----")
    for key in sorted(k for k, v in totals.items() if v):
        outcome, reason = key.split("/")
        _say(f"  {outcome:<14}  {reason:<20}  {totals[key]:5d}")
    _say(f"  {'total':<14}  {'':<20}  {sum(totals.values()):5d}")
    verdict = "as expected" if totals == expected else f"EXPECTED {dict(expected)}"
    _say(f"  every request accounted for: {verdict}\n")


async def _show_dead_letters(settings: Settings) -> None:
    consumer = AIOKafkaConsumer(
        settings.kafka.dlq_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=3000, max_records=1000)
    finally:
        await consumer.stop()
    _say("  dead letters, as stored on the DLQ topic (tokens redacted to their fingerprint):")
    _say(f"  {'reason':<16} {'code':<24} {'from':<5} target or payload")
    records = sorted((m for ms in batch.values() for m in ms), key=lambda m: _header(m, "reason"))
    for message in records:
        origin = f"{_header(message, 'partition')}@{_header(message, 'offset')}"
        reason, code = _header(message, "reason"), _header(message, "code")
        _say(f"  {reason:<16} {code:<24} {origin:<5} {_what(message.value or b'')}")


def _header(message: Any, name: str) -> str:
    wanted = f"signout.error.{name}" if name in ("reason", "code") else f"signout.original.{name}"
    return next((v.decode() for k, v in message.headers if k == wanted), "")


def _what(value: bytes) -> str:
    """The target of a dead letter (its token already redacted by the worker) or the payload."""
    try:
        document = json.loads(value)
    except ValueError:
        return repr(value)[:60]
    if isinstance(document, dict) and "access_token" in document:
        return str(document["access_token"])
    if isinstance(document, dict) and "username" in document:
        return f"{document.get('user_pool_id')}/{document['username']}"
    return json.dumps(document)[:60]


def _say(text: str) -> None:
    """The demo's console display (stdout); the worker's own log goes to .demo/worker.log."""
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
