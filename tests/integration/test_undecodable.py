"""Records the Kafka client cannot decode, through a real broker and the real worker.

A header key that is not UTF-8 makes aiokafka raise out of `getmany`. The worker must stay up,
sign out every valid request (also those sharing the bad record's batch), dead-letter the bad one
with its coordinates, and commit to the end. This test also guards the aiokafka internals that
`worker.salvage` reads: if they change, the valid records of the bad batch are no longer signed
out (they fall back to coordinates-only dead letters) and the assertions below fail.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from devstack.moto import MotoServer
from tests.conftest import PoolFactory
from tests.integration.conftest import (
    Names,
    committed_and_ends,
    headers_of,
    read_all,
    run_in_process,
    settings_for,
)
from tests.integration.test_pipeline import assert_every_valid_token_is_revoked

BAD_KEY = b"\xff\xfe"
Headers = list[tuple[str, bytes]]


class RawKey(str):
    """A header key whose wire bytes are arbitrary: aiokafka's pure-Python builder calls .encode."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawKey:
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


async def topics_with_partitions(
    bootstrap: str,
    partitions: int,
    source: dict[str, str] | None = None,
    dlq: dict[str, str] | None = None,
) -> Names:
    run = uuid.uuid4().hex[:10]
    names = Names(f"req-{run}", f"req-{run}.dlq", f"req-{run}.results", f"group-{run}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(names.topic, partitions, 1, topic_configs=source or {}),
                NewTopic(names.dlq, 1, 1, topic_configs=dlq or {}),
                NewTopic(names.results, 1, 1),
            ]
        )
    finally:
        await admin.close()
    return names


async def send_one_batch(
    bootstrap: str,
    topic: str,
    partition: int,
    records: list[tuple[bytes, bytes, Headers]],
    compression: int = 0,
) -> None:
    """All `records` in one v2 batch, built by the pure-Python builder (it honours RawKey)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch: Any = producer.create_batch()
        batch._builder = _DefaultRecordBatchBuilderPy(2, compression, 0, -1, -1, 0, 1 << 22)
        for key, value, headers in records:
            assert batch.append(key=key, value=value, timestamp=None, headers=headers) is not None
        await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()


def kcat_produce(
    bootstrap: str, topic: str, partition: int, key: bytes, value: bytes, header: bytes
) -> None:
    """One message through librdkafka, with one raw header (`name=value`, name as bytes)."""
    subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", str(partition), "-K", "|", "-H", header],
        input=key + b"|" + value + b"\n",
        check=True,
        timeout=60,
    )


def request(token: str) -> tuple[bytes, bytes]:
    key = uuid.uuid4().hex
    return key.encode(), json.dumps({"event_id": key, "access_token": token}).encode()


@pytest.mark.timeout(180)
async def test_a_header_key_that_is_not_utf8_is_dead_lettered_and_the_rest_signed_out(
    kafka_bootstrap: str, moto_server: MotoServer, make_pool: PoolFactory
) -> None:
    names = await topics_with_partitions(kafka_bootstrap, 3)
    pool = await make_pool(13)
    tokens = [u.access_token for u in pool.users]
    ok: Headers = [("source", b"test")]
    # p0: one batch of five, the middle one with the bad key; then a good batch of two.
    first = [(*request(t), ok) for t in tokens[:5]]
    first[2] = (first[2][0], first[2][1], [(RawKey(BAD_KEY), b"h"), ("source", b"test")])
    await send_one_batch(kafka_bootstrap, names.topic, 0, first)
    await send_one_batch(kafka_bootstrap, names.topic, 0, [(*request(t), ok) for t in tokens[5:7]])
    # p1: a good batch, often drained by the failing getmany before p0 raises.
    await send_one_batch(kafka_bootstrap, names.topic, 1, [(*request(t), ok) for t in tokens[7:10]])
    # p2: separate batches through librdkafka: good, bad, good.
    for i, token in enumerate(tokens[10:13]):
        header = BAD_KEY + b"=v" if i == 1 else b"source=test"
        kcat_produce(kafka_bootstrap, names.topic, 2, *request(token), header)
    bad = {(0, 2): first[2][0], (2, 1): None}
    valid = [t for i, t in enumerate(tokens) if i not in (2, 11)]

    settings = settings_for(kafka_bootstrap, moto_server.endpoint_url, names)
    metrics = await run_in_process(settings)

    dead = await read_all(kafka_bootstrap, names.dlq)
    coordinates = {
        (
            int(headers_of(r)["signout.original.partition"]),
            int(headers_of(r)["signout.original.offset"]),
        )
        for r in dead
    }
    assert len(dead) == 2
    assert coordinates == set(bad)
    for record in dead:
        headers = headers_of(record)
        assert headers["signout.error.reason"] == "invalid_payload"
        assert headers["signout.error.message"] == "header key is not valid UTF-8"
        assert headers["signout.original.topic"] == names.topic
        assert "\\xff\\xfe" in headers, "the bad key is kept, escaped"
    assert bad[(0, 2)] in {r.key for r in dead}, "what was recovered is kept"
    results = [json.loads(r.value) for r in await read_all(kafka_bootstrap, names.results)]
    assert Counter((r["outcome"], r["reason"]) for r in results) == {
        ("signed_out", "global_sign_out"): len(valid),
        ("dead_lettered", "invalid_payload"): 2,
    }
    committed, ends = await committed_and_ends(kafka_bootstrap, names.group, names.topic)
    assert committed == ends == {0: 7, 1: 3, 2: 3}
    await assert_every_valid_token_is_revoked(pool, valid)
    assert metrics.undecodable._value.get() == 2
