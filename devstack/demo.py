"""`make demo`: the whole product on a local stack, in well under a minute.

Starts a real Kafka broker and one Cognito emulator (moto) per Region, us-east-1 and eu-west-1,
seeds a user pool with real tokens in each, and publishes a mixed batch for both Regions plus a
bulk backlog for eu-west-1 on a small budget. While the backlog drains, a few urgent requests for
eu-west-1 go to the urgent topic: the demo shows how long they took (publish to outcome, from the
results topic) and how much of the backlog was still waiting. The worker runs with a
one-line-per-second progress display; the demo ends with a summary table, the Cognito calls per
Region, moto's own check that the tokens no longer work, and the dead letters (redacted).
Everything it started stops, also on Ctrl-C.
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
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack import broker
from devstack.moto import MotoServer, Pool, User, add_users, client_kwargs, seed_pool
from worker.app import RunOptions, Worker
from worker.logs import configure
from worker.metrics import Metrics
from worker.settings import Settings

REPO_ROOT = broker.REPO_ROOT
STATE = REPO_ROOT / ".demo"  # in the work tree, gitignored
PARTITIONS = 3
HOME, AWAY = "us-east-1", "eu-west-1"  # the mixed batch's main Region; the backlog's Region
BUDGET, BACKLOG_BUDGET = 20.0, 10.0  # calls per second in HOME and in AWAY
BACKLOG = 200  # bulk admin sign-outs in AWAY, about 20 s at its budget
URGENT = 3  # urgent token sign-outs in AWAY, published once the backlog is under way
URGENT_AFTER = 25  # backlog calls done before the urgent requests are published
BACKLOG_PREFIX = "backlog-"


@dataclass
class Batch:
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    expected: Counter[str] = field(default_factory=Counter)
    signed_out: dict[str, list[User]] = field(default_factory=dict)  # by Region, for moto's check

    def add(self, key: str | None, value: bytes, outcome: str, count: int = 1) -> None:
        self.records += [(key.encode() if key else None, value)] * count
        self.expected[outcome] += count

    def gone(self, region: str, users: Iterable[User]) -> None:
        self.signed_out.setdefault(region, []).extend(users)


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
        bootstrap, motos = await _start_stack(stack)
        pools = await _seed(motos)
        settings = _settings(bootstrap, motos)
        await _create_topics(settings)
        batch = await _batch(pools)
        await _publish(settings.kafka.bootstrap_servers, settings.kafka.topic, batch.records)
        _say(
            f"published {len(batch.records)} requests to {settings.kafka.topic}: a mixed batch for "
            f"both Regions and a backlog of {BACKLOG} for {AWAY} (budget {BACKLOG_BUDGET:g}/s)"
        )
        urgent = _urgent(batch, pools[AWAY])
        metrics = Metrics()
        await _run_worker(settings, metrics, urgent)
        _summary(metrics, batch.expected)
        _calls_by_region(metrics)
        await _overtaking(settings)
        await _moto_check(batch, pools)
        await _show_dead_letters(settings)
    return 0


async def _start_stack(stack: AsyncExitStack) -> tuple[str, dict[str, MotoServer]]:
    _say("starting a local Kafka broker (the first run downloads its jars from Maven Central)")
    started = time.monotonic()
    # Main thread: the broker dies with this process, even after kill -9.
    kafka = broker.start(STATE / "kafka", die_with_parent=True)
    stack.callback(kafka.stop)
    _say(f"broker ready at {kafka.bootstrap} in {time.monotonic() - started:.1f}s")
    motos: dict[str, MotoServer] = {}
    for region in (HOME, AWAY):
        motos[region] = await asyncio.to_thread(MotoServer, STATE / f"moto-{region}.log", region)
        stack.callback(motos[region].stop)
        _say(f"Cognito emulator (moto) for {region} ready at {motos[region].endpoint_url}")
    return str(kafka.bootstrap), motos


async def _seed(motos: dict[str, MotoServer]) -> dict[str, Pool]:
    home, away = await asyncio.gather(
        seed_pool(motos[HOME].endpoint_url, 60, prefix="demo", region=HOME),
        seed_pool(motos[AWAY].endpoint_url, 12 + URGENT, prefix="demo-eu", region=AWAY),
    )
    await add_users(away, [f"{BACKLOG_PREFIX}{i:04d}" for i in range(BACKLOG)])
    for pool in (home, away):
        _say(f"  {pool.region}: pool {pool.pool_id}, {len(pool.users)} users with real tokens")
    return {HOME: home, AWAY: away}


def _settings(bootstrap: str, motos: dict[str, MotoServer]) -> Settings:
    run = uuid.uuid4().hex[:6]
    return Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": f"demo.requests.{run}",
                "urgent_topic": f"demo.requests.{run}.urgent",
                "dlq_topic": f"demo.requests.{run}.dlq",
                "results_topic": f"demo.requests.{run}.results",
                "group_id": f"demo-{run}",
            },
            # What SIGNOUT_COGNITO__ENDPOINT_URL='{"us-east-1": "http://…", …}' gives.
            "cognito": {
                "endpoint_url": {region: moto.endpoint_url for region, moto in motos.items()},
                "region": HOME,
            },
            "rate": {"per_second": BUDGET, "regions": {AWAY: BACKLOG_BUDGET}},
            "log": {"level": "INFO", "format": "json"},
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )


async def _create_topics(settings: Settings) -> None:
    kafka = settings.kafka
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(kafka.topic, PARTITIONS, 1),
                NewTopic(str(kafka.urgent_topic), 1, 1),
                NewTopic(kafka.dlq_topic, 1, 1),
                NewTopic(str(kafka.results_topic), 1, 1),
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


async def _batch(pools: dict[str, Pool]) -> Batch:
    home = pools[HOME]
    await _revoke([u.access_token for u in home.users[40:50]], home)
    batch = Batch()
    _token_requests(batch, home)
    _admin_requests(batch, home)
    _local_failures(batch)
    _other_region(batch, pools[AWAY])
    _backlog(batch, pools[AWAY])
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
    batch.gone(pool.region, valid + fallback)


def _admin_requests(batch: Batch, pool: Pool) -> None:
    for user in pool.users[50:56]:
        value = _request(user_pool_id=pool.pool_id, username=user.username)
        batch.add(user.username, value, "signed_out/admin_sign_out")
    batch.gone(pool.region, pool.users[50:56])
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


def _other_region(batch: Batch, pool: Pool) -> None:
    """Token and admin sign-outs in the second Region, each sent to that Region's endpoint."""
    tokens, admins = pool.users[:8], pool.users[8:12]
    for user in tokens:
        batch.add(user.username, _request(user.access_token), "signed_out/global_sign_out")
    for user in admins:
        value = _request(user_pool_id=pool.pool_id, username=user.username)
        batch.add(user.username, value, "signed_out/admin_sign_out")
    batch.gone(pool.region, tokens + admins)


def _backlog(batch: Batch, pool: Pool) -> None:
    for i in range(BACKLOG):
        name = f"{BACKLOG_PREFIX}{i:04d}"
        value = _request(event_id=f"{BACKLOG_PREFIX}{i}", user_pool_id=pool.pool_id, username=name)
        batch.add(name, value, "signed_out/admin_sign_out")


def _urgent(batch: Batch, pool: Pool) -> list[User]:
    """The users whose urgent requests will overtake the backlog (published during the run)."""
    users = pool.users[12 : 12 + URGENT]
    batch.expected["signed_out/global_sign_out"] += len(users)
    batch.gone(pool.region, users)
    return users


async def _revoke(tokens: list[str], pool: Pool) -> None:
    kwargs = client_kwargs(pool.endpoint_url, pool.region)
    async with get_session().create_client("cognito-idp", **kwargs) as idp:
        for token in tokens:
            await idp.global_sign_out(AccessToken=token)


async def _publish(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sends = [await producer.send(topic, v, key=k) for k, v in records]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _publish_urgent(settings: Settings, metrics: Metrics, users: list[User]) -> None:
    """Once the backlog is under way, the urgent requests, stamped with their publish time."""
    while True:  # metrics have no event to wait on: look ten times a second
        await asyncio.sleep(0.1)
        if _calls(metrics, AWAY, "AdminUserGlobalSignOut") >= URGENT_AFTER:
            break
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    records = [
        (u.username.encode(), _request(u.access_token, event_id=f"urgent-{i}", requested_at=now))
        for i, u in enumerate(users)
    ]
    await _publish(settings.kafka.bootstrap_servers, str(settings.kafka.urgent_topic), records)
    _say(
        f"  -> published {len(records)} urgent requests for {AWAY} to {settings.kafka.urgent_topic}"
    )


async def _run_worker(settings: Settings, metrics: Metrics, urgent: list[User]) -> None:
    log_file = STATE / "worker.log"
    with log_file.open("a") as stream:
        configure(settings.log.level, settings.log.format, stream)
        worker = Worker(settings, metrics)
        worker.install_signal_handlers()
        helpers = [
            asyncio.create_task(_progress(metrics)),
            asyncio.create_task(_publish_urgent(settings, metrics, urgent)),
        ]
        try:
            await worker.run(RunOptions(until_idle_seconds=1.5))
        finally:
            for task in helpers:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            logging.getLogger().handlers.clear()
    _say(f"worker stopped (its JSON log: {log_file.relative_to(REPO_ROOT)})")


def _samples(metrics: Metrics, name: str) -> Iterable[Any]:
    for metric in metrics.registry.collect():
        if metric.name == name:
            yield from (s for s in metric.samples if s.name.endswith("_total"))


def _totals(metrics: Metrics, lane: str | None = None) -> Counter[str]:
    totals: Counter[str] = Counter()
    for sample in _samples(metrics, "signout_events"):
        if lane is None or sample.labels["lane"] == lane:
            totals[f"{sample.labels['outcome']}/{sample.labels['reason']}"] += int(sample.value)
    return totals


def _calls(metrics: Metrics, region: str, operation: str) -> int:
    return sum(
        int(s.value)
        for s in _samples(metrics, "signout_cognito_requests")
        if s.labels["region"] == region and s.labels["operation"] == operation
    )


async def _progress(metrics: Metrics) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(1)
        _say(_progress_line(time.monotonic() - started, metrics))


def _progress_line(elapsed: float, metrics: Metrics) -> str:
    done = Counter[str]()
    for key, value in _totals(metrics).items():
        done[key.split("/")[0]] += value
    urgent = sum(_totals(metrics, "urgent").values())
    inflight = int(metrics.inflight._value.get())
    return (
        f"{elapsed:5.0f}s  signed_out {done['signed_out']:4d}  duplicate {done['duplicate']:3d}  "
        f"dead_lettered {done['dead_lettered']:3d}  urgent {urgent}  in_flight {inflight:3d}"
    )


def _summary(metrics: Metrics, expected: Counter[str]) -> None:
    totals = _totals(metrics)
    _say("\n  outcome         reason                count")
    _say("  --------------  --------------------  -----")
    for key in sorted(k for k, v in totals.items() if v):
        outcome, reason = key.split("/")
        _say(f"  {outcome:<14}  {reason:<20}  {totals[key]:5d}")
    _say(f"  {'total':<14}  {'':<20}  {sum(totals.values()):5d}")
    verdict = "as expected" if +totals == +expected else f"EXPECTED {dict(expected)}"
    _say(f"  every request accounted for: {verdict}\n")


def _calls_by_region(metrics: Metrics) -> None:
    _say("  Cognito calls by Region (each Region's own endpoint and budget)")
    _say("  Region      operation               result                     count")
    rows = Counter[tuple[str, str, str]]()
    for sample in _samples(metrics, "signout_cognito_requests"):
        labels = sample.labels
        rows[(labels["region"], labels["operation"], labels["result"])] += int(sample.value)
    for (region, operation, result), count in sorted(rows.items()):
        if count:
            _say(f"  {region:<10}  {operation:<22}  {result:<25}  {count:5d}")
    _say("")


async def _read_topic(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        while not consumer.assignment():
            records += _flatten(await consumer.getmany(timeout_ms=200))
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            records += _flatten(await consumer.getmany(timeout_ms=500, max_records=1000))
    finally:
        await consumer.stop()
    return records


def _flatten(batch: dict[Any, list[Any]]) -> list[Any]:
    return [m for messages in batch.values() for m in messages]


async def _overtaking(settings: Settings) -> None:
    """From the results topic: each urgent request's publish-to-outcome time, the backlog left."""
    kafka = settings.kafka
    results = [
        json.loads(r.value)
        for r in await _read_topic(kafka.bootstrap_servers, str(kafka.results_topic))
    ]
    backlog_done = sorted(
        _when(r["completed_at"]) for r in results if str(r["event_id"]).startswith(BACKLOG_PREFIX)
    )
    _say(f"  the urgent lane ({AWAY}, budget {BACKLOG_BUDGET:g}/s, from the results topic):")
    for result in sorted(
        (r for r in results if r["lane"] == "urgent"), key=lambda r: r["event_id"]
    ):
        done = _when(result["completed_at"])
        took = done - _when(result["requested_at"])
        waiting = sum(1 for t in backlog_done if t > done)
        _say(
            f"  urgent request {result['event_id']} {result['outcome']} in {took:.2f} s "
            f"while {waiting} of {BACKLOG} bulk requests were still waiting"
        )
    if backlog_done:
        span = backlog_done[-1] - backlog_done[0]
        _say(f"  the bulk backlog took {span:.1f} s in all, every one signed out in its turn\n")


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def _moto_check(batch: Batch, pools: dict[str, Pool]) -> None:
    """Ask each Region's emulator whether the signed-out users' tokens still work."""
    for region, users in batch.signed_out.items():
        live = await _still_valid(pools[region], users)
        _say(
            f"  moto ({region}): {len(users) - live} of {len(users)} signed-out users' tokens "
            f"no longer work" + ("" if not live else f"  ({live} STILL VALID)")
        )
    _say("")


async def _still_valid(pool: Pool, users: list[User]) -> int:
    kwargs = client_kwargs(pool.endpoint_url, pool.region)
    live = 0
    async with get_session().create_client("cognito-idp", **kwargs) as idp:
        for user in users:
            try:
                await idp.get_user(AccessToken=user.access_token)
                live += 1
            except idp.exceptions.NotAuthorizedException:
                pass
    return live


async def _show_dead_letters(settings: Settings) -> None:
    kafka = settings.kafka
    messages = await _read_topic(kafka.bootstrap_servers, kafka.dlq_topic)
    _say("  dead letters, as stored on the DLQ topic (tokens redacted to their fingerprint):")
    _say(f"  {'reason':<16} {'code':<24} {'from':<5} target or payload")
    for message in sorted(messages, key=lambda m: _header(m, "reason")):
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
