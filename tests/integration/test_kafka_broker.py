"""The local broker is a real Kafka: groups, explicit commits, transactions, compressed batches."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.conftest import TopicFactory


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _consume(consumer: AIOKafkaConsumer, count: int) -> list[bytes]:
    values: list[bytes] = []
    async with asyncio.timeout(30):
        while len(values) < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=count - len(values))
            values += [m.value for messages in batch.values() for m in messages]
    return values


async def _committed_eventually(consumer: AIOKafkaConsumer, tp: TopicPartition, want: int) -> int:
    committed = None
    for _ in range(50):
        committed = await consumer.committed(tp)
        if committed == want:
            break
        await asyncio.sleep(0.1)
    return committed


def _group_consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def test_a_new_consumer_resumes_after_explicitly_committed_offsets(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic("resume")
    await _produce(kafka_bootstrap, topic, [f"m{i}".encode() for i in range(10)])
    first = _group_consumer(kafka_bootstrap, topic, f"g-{topic}")
    await first.start()
    try:
        assert await _consume(first, 4) == [b"m0", b"m1", b"m2", b"m3"]
        await first.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "")})
    finally:
        await first.stop()
    second = _group_consumer(kafka_bootstrap, topic, f"g-{topic}")
    await second.start()
    try:
        assert await second.committed(TopicPartition(topic, 0)) == 4
        assert await _consume(second, 6) == [f"m{i}".encode() for i in range(4, 10)]
    finally:
        await second.stop()


async def test_transactional_producer_commits_offsets_with_the_transaction(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    source, sink = await make_topic("tx-in"), await make_topic("tx-out")
    group = f"g-{source}"
    await _produce(kafka_bootstrap, source, [b"a", b"b", b"c"])
    consumer = _group_consumer(kafka_bootstrap, source, group)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"tx-{source}")
    await consumer.start()
    await producer.start()
    try:
        values = await _consume(consumer, 3)
        async with producer.transaction():
            for value in values:
                await producer.send(sink, value.upper())
            offsets = {TopicPartition(source, 0): 3}
            await producer.send_offsets_to_transaction(offsets, group)
        # The group coordinator applies transactional offsets once the commit markers are written.
        assert await _committed_eventually(consumer, TopicPartition(source, 0), 3) == 3
    finally:
        await producer.stop()
        await consumer.stop()
    reader = AIOKafkaConsumer(
        sink,
        bootstrap_servers=kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        assert await _consume(reader, 3) == [b"A", b"B", b"C"]
    finally:
        await reader.stop()


def _kcat() -> str:
    kcat = shutil.which("kcat")
    if kcat is None:
        if os.environ.get("CI"):
            pytest.fail("kcat is not installed (.ci/run installs it with apt-get)")
        pytest.skip("kcat is not installed (apt-get install kcat)")
    return kcat


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_records_kcat_compressed_are_consumed(
    kafka_bootstrap: str, make_topic: TopicFactory, codec: str
) -> None:
    topic = await make_topic(f"kcat-{codec}")
    lines = [f'{{"event_id": "{codec}-{i}", "pad": "{"x" * 200}"}}' for i in range(50)]
    kcat = await asyncio.create_subprocess_exec(
        *[_kcat(), "-b", kafka_bootstrap, "-t", topic, "-P", "-z", codec, "-X", "linger.ms=50"],
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(kcat.communicate("\n".join(lines).encode()), 60)
    assert kcat.returncode == 0, stderr.decode()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        values = await _consume(consumer, len(lines))
    finally:
        await consumer.stop()
    assert [v.decode() for v in values] == lines
