"""Dead letters through a real broker: too large for the DLQ topic, and a DLQ broken then fixed.

The handler and `KafkaDeadLetters` are driven directly (no consumer loop): each test hands records
to the handler and reads what reached the DLQ topic.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.conftest import headers_of, read_all
from tests.unit.fakes import FakeDeadLetterHealth, FakeLimiter, FakeProgress, ScriptedSigner
from worker.deadletter import VALUE_DROPPED, KafkaDeadLetters, kafka_producers
from worker.errors import Outcome, Reason
from worker.handler import Handler
from worker.metrics import Metrics
from worker.records import Record
from worker.settings import DedupSettings, KafkaSettings, RetrySettings

pytestmark = pytest.mark.integration

SOURCE = "signout.requests"
SMALL_TOPIC_BYTES = 2_000  # max.message.bytes of the DLQ topic in the too-large test
UNWRITABLE_BYTES = 64  # below even a dead letter without value, key and carried headers


class Gate:
    """The DLQ retry's backoff, shortened for the test. Closed, it holds each retrying writer
    between two rounds, so no round straddles a change of the topic's limit."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self._held = 0
        self._changed = asyncio.Condition()

    async def close(self, writers: int) -> None:
        """Close, and return once `writers` writers are held."""
        self.open.clear()
        async with self._changed:
            await self._changed.wait_for(lambda: self._held >= writers)

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(min(delay, 0.05))
        if self.open.is_set():
            return
        async with self._changed:
            self._held += 1
            self._changed.notify_all()
        try:
            await self.open.wait()
        finally:
            self._held -= 1


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def dlq_topic(admin: AIOKafkaAdminClient, max_message_bytes: int | None = None) -> str:
    name = f"dlq-{uuid.uuid4().hex[:10]}"
    configs = {} if max_message_bytes is None else {"max.message.bytes": str(max_message_bytes)}
    await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    return name


async def set_max_message_bytes(admin: AIOKafkaAdminClient, topic: str, size: int) -> None:
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(size)})
    await admin.alter_configs([resource])


async def until_applied(admin: AIOKafkaAdminClient, topic: str, size: int) -> None:
    """Until the broker reports the topic's new limit, and a moment for it to take effect."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    async with asyncio.timeout(30):
        while True:
            (response,) = await admin.describe_configs([resource])
            entries = {e[0]: e[1] for r in response.resources for e in r[4]}
            if entries.get("max.message.bytes") == str(size):
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


class WatchedHealth(FakeDeadLetterHealth):
    """Also says when writes have failed `enough` times since the last success."""

    def __init__(self, enough: int) -> None:
        super().__init__()
        self._enough = enough
        self._streak = 0
        self.failed_enough = asyncio.Event()

    def dead_letters_failing(self, failing: bool) -> None:
        super().dead_letters_failing(failing)
        self._streak = self._streak + 1 if failing else 0
        if self._streak >= self._enough:
            self.failed_enough.set()


class Rig:
    """A handler over a real `KafkaDeadLetters`; every request here is dead-lettered locally."""

    def __init__(self, bootstrap: str, dlq: str) -> None:
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap, dlq_topic=dlq, group_id="g")
        self.metrics = Metrics()
        self.health = WatchedHealth(enough=9)
        self.gate = Gate()
        self.sink = KafkaDeadLetters(
            kafka_producers(self.kafka),
            self.kafka,
            redact=True,
            metrics=self.metrics,
            health=self.health,
        )
        self.handler = Handler(
            ScriptedSigner(),
            self.sink,
            FakeLimiter(),
            self.metrics,
            retry=RetrySettings(),
            dedup=DedupSettings(),
            admin_enabled=True,
            progress=FakeProgress(),
            sleep=self.gate.sleep,
        )

    def total_write_errors(self) -> float:
        samples = self.metrics.registry.collect()
        return sum(
            s.value
            for f in samples
            for s in f.samples
            if s.name == "signout_dlq_write_errors_total"
        )

    def write_errors(self, error: str) -> float:
        labels = {"error": error}
        value = self.metrics.registry.get_sample_value("signout_dlq_write_errors_total", labels)
        return value or 0.0


def invalid_token_record(offset: int, padding: int = 0) -> Record:
    """A request with a token that is not a JWT: token_invalid, decided without a call."""
    document = {"event_id": f"e-{offset}", "access_token": "not-a-jwt", "pad": "x" * padding}
    value = json.dumps(document).encode()
    return Record(SOURCE, 0, offset, b"user", value, (("traceparent", b"00-t"),), 1_714_564_800_000)


async def test_a_dead_letter_too_large_for_the_topic_is_written_without_its_value(
    kafka_bootstrap: str, admin: AIOKafkaAdminClient
) -> None:
    dlq = await dlq_topic(admin, SMALL_TOPIC_BYTES)
    rig = Rig(kafka_bootstrap, dlq)
    async with rig.sink:
        big = await rig.handler.handle(invalid_token_record(10, padding=50_000))
        small = await rig.handler.handle(invalid_token_record(11))
    assert big.reason is small.reason is Reason.TOKEN_INVALID
    first, second = await read_all(kafka_bootstrap, dlq)
    assert first.value == b""
    headers = headers_of(first)
    assert headers[VALUE_DROPPED] == "true"
    assert headers["signout.original.topic"] == SOURCE
    assert headers["signout.original.partition"] == "0"
    assert headers["signout.original.offset"] == "10"
    assert headers["signout.error.reason"] == "token_invalid"
    assert headers["traceparent"] == "00-t"
    assert first.key == b"user"
    # The refused batch poisoned the first producer; the next dead letter went through as it is.
    assert headers_of(second)["signout.original.offset"] == "11"
    assert VALUE_DROPPED not in headers_of(second)
    assert json.loads(second.value)["event_id"] == "e-11"
    assert rig.write_errors("MessageSizeTooLargeError") == 1
    assert rig.write_errors("OutOfOrderSequenceNumber") == 0
    assert rig.health.reports == [True, False, False]


async def test_a_dlq_made_unwritable_then_fixed_resumes_by_itself_and_loses_nothing(
    kafka_bootstrap: str, admin: AIOKafkaAdminClient
) -> None:
    dlq = await dlq_topic(admin)
    rig = Rig(kafka_bootstrap, dlq)
    async with rig.sink:
        for offset in range(3):
            await rig.handler.handle(invalid_token_record(offset))
        await set_max_message_bytes(admin, dlq, UNWRITABLE_BYTES)
        waiting = [
            asyncio.create_task(rig.handler.handle(invalid_token_record(offset)))
            for offset in range(3, 6)
        ]
        async with asyncio.timeout(60):
            await rig.health.failed_enough.wait()  # three rounds of full, no value, bare
        assert rig.total_write_errors() >= 9
        assert not any(task.done() for task in waiting)  # no outcome before the ack
        async with asyncio.timeout(30):
            await rig.gate.close(len(waiting))
        await set_max_message_bytes(admin, dlq, 1_000_000)
        await until_applied(admin, dlq, 1_000_000)
        rig.gate.open.set()
        async with asyncio.timeout(60):
            results = await asyncio.gather(*waiting)
    assert {r.outcome for r in results} == {Outcome.DEAD_LETTERED}
    records = await read_all(kafka_bootstrap, dlq)
    offsets = sorted(int(headers_of(r)["signout.original.offset"]) for r in records)
    assert offsets == list(range(6))  # nothing lost, nothing written twice
    assert all(VALUE_DROPPED not in headers_of(r) for r in records)  # fixed: values kept whole
    assert rig.write_errors("other") == 0  # every failure was the broker's refusal, named
    assert rig.health.failing is False
    dlq_total = rig.metrics.registry.get_sample_value(
        "signout_dlq_records_total", {"reason": "token_invalid"}
    )
    assert dlq_total == 6
