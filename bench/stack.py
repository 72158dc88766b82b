"""The bench's own Kafka broker and topics, and the sign-out requests it publishes.

Every scenario gets fresh topics (a backlog, its dead-letter topic) and a fresh group, so no
scenario sees another's records or offsets.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack import broker as local_broker
from devstack.cognito_stub import fingerprint, make_token

PARTITIONS = 4
# Sent in chunks so that a large backlog never sits in the producer's memory at once.
PUBLISH_CHUNK = 5_000


@dataclass(frozen=True)
class Topics:
    topic: str
    dlq: str
    group: str


@contextmanager
def running_broker() -> Iterator[str]:
    """A throwaway single-node broker in a temporary directory; yields its bootstrap address."""
    with tempfile.TemporaryDirectory(prefix="signout-bench-kafka-") as state:
        # The bench runs on its main thread throughout, so the broker may die with that thread.
        broker = local_broker.start(Path(state), die_with_parent=True)
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


async def fresh_topics(bootstrap: str, name: str, partitions: int = PARTITIONS) -> Topics:
    run = f"{name}-{uuid.uuid4().hex[:8]}"
    topics = Topics(f"bench-{run}", f"bench-{run}.dlq", f"bench-group-{run}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topics.topic, partitions, 1), NewTopic(topics.dlq, 1, 1)]
        )
    finally:
        await admin.close()
    return topics


def request_value(number: int) -> bytes:
    """One sign-out request with its own access token (the stub revokes each token once)."""
    request = {
        "event_id": str(uuid.uuid4()),
        "access_token": make_token(username=f"bench-user-{number}"),
        "reason": "benchmark",
        "source": "make-bench",
    }
    return json.dumps(request, separators=(",", ":")).encode()


async def publish(bootstrap: str, topic: str, count: int) -> int:
    """Publish `count` requests spread over the partitions; returns the mean value size."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    total = 0
    try:
        for first in range(0, count, PUBLISH_CHUNK):
            values = [request_value(n) for n in range(first, min(first + PUBLISH_CHUNK, count))]
            total += sum(len(v) for v in values)
            sent = [await producer.send(topic, value) for value in values]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return total // max(count, 1)


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


def region_request(region: str, name: str) -> tuple[str, bytes]:
    """(token, value) of a request for a user of `region`: its `iss` routes it there."""
    token = make_token(username=name, iss=f"https://cognito-idp.{region}.amazonaws.com/{region}_B")
    request = {"event_id": str(uuid.uuid4()), "access_token": token, "source": "make-bench"}
    return token, json.dumps(request, separators=(",", ":")).encode()


class Sender:
    """Publishes requests one at a time, keeping each one's publish time by token fingerprint."""

    def __init__(self, bootstrap: str) -> None:
        self.published: dict[str, float] = {}
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)

    async def __aenter__(self) -> Sender:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, token: str, value: bytes) -> None:
        self.published[fingerprint(token)] = time.monotonic()
        await self._producer.send_and_wait(topic, value)

    async def backlog(self, topic: str, batch: list[tuple[str, bytes]]) -> None:
        sent = [await self._producer.send(topic, value) for _, value in batch]
        await asyncio.gather(*sent)
