"""deadletter.KafkaDeadLetters: too-large dead letters, poisoned producers, health and error counts.

The producers are fakes over a `FakeBroker` that behaves like an idempotent producer against a real
broker: after a batch refused for good, every later send through that producer fails with
OutOfOrderSequenceNumber until the producer is replaced.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    TopicAuthorizationFailedError,
)

from tests.unit.fakes import FakeBroker, FakeDeadLetterHealth, FakeSink, make_jwt
from tests.unit.test_handler import harness, token_request
from worker.connection import producer_options
from worker.deadletter import VALUE_DROPPED, KafkaDeadLetters
from worker.errors import LOCAL_CODE, Outcome, PermanentError, Reason
from worker.handler import Handler
from worker.metrics import Metrics, dlq_write_error
from worker.records import Record, Result
from worker.settings import KafkaSettings

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TOKEN = make_jwt(exp=4_000_000_000)
KAFKA = KafkaSettings(dlq_topic="dlq", group_id="grp")


def _broker(**limits: int) -> FakeBroker:
    return FakeBroker(
        too_large=MessageSizeTooLargeError, poisoned_error=OutOfOrderSequenceNumber, **limits
    )


class Sink:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.metrics = Metrics()
        self.health = FakeDeadLetterHealth()
        self.sink = KafkaDeadLetters(
            broker.make,
            KAFKA,
            redact=True,
            metrics=self.metrics,
            health=self.health,
            now=lambda: NOW,
        )

    def errors(self, error: str) -> float:
        sample = self.metrics.registry.get_sample_value(
            "signout_dlq_write_errors_total", {"error": error}
        )
        return sample or 0.0


def _record(value: bytes | None = b"x" * 100, offset: int = 7, **extra: object) -> Record:
    headers = (("traceparent", b"00-abc"),)
    return Record("signout.requests", 2, offset, b"key", value, headers, 1_714_564_800_000)


def _result(reason: Reason = Reason.INVALID_PAYLOAD) -> Result:
    error = PermanentError(reason, LOCAL_CODE, "bad")
    return Result(Outcome.DEAD_LETTERED, reason, error=error)


def _headers(sent: object) -> dict[str, bytes]:
    return dict(sent.headers)  # type: ignore[attr-defined]


async def test_the_sink_starts_and_stops_its_own_producer() -> None:
    s = Sink(_broker())
    async with s.sink:
        (producer,) = s.broker.producers
        assert producer.started
        assert not producer.stopped
    assert producer.stopped


async def test_a_dead_letter_the_broker_finds_too_large_is_written_without_its_value() -> None:
    s = Sink(_broker(max_message_bytes=1_000))
    async with s.sink:
        await s.sink.dead_letter(_record(b"v" * 5_000), _result(Reason.RETRIES_EXHAUSTED))
        await s.sink.dead_letter(_record(b"small", offset=8), _result())
    first, second = s.broker.log
    assert first.value == b""
    headers = _headers(first)
    assert headers[VALUE_DROPPED] == b"true"
    assert headers["signout.original.topic"] == b"signout.requests"
    assert headers["signout.original.partition"] == b"2"
    assert headers["signout.original.offset"] == b"7"
    assert headers["signout.error.reason"] == b"retries_exhausted"
    assert headers["traceparent"] == b"00-abc"
    assert first.key == b"key"
    assert second.value == b"small"
    assert VALUE_DROPPED not in _headers(second)
    assert len(s.broker.producers) == 2  # the refused batch poisoned the first one
    assert s.errors("MessageSizeTooLargeError") == 1
    assert s.errors("OutOfOrderSequenceNumber") == 0
    assert s.health.reports == [True, False, False]


async def test_a_dead_letter_above_the_client_limit_keeps_the_producer() -> None:
    s = Sink(_broker(max_request_size=1_000))
    async with s.sink:
        await s.sink.dead_letter(_record(b"v" * 5_000), _result())
    (sent,) = s.broker.log
    assert sent.value == b""
    assert _headers(sent)[VALUE_DROPPED] == b"true"
    assert len(s.broker.producers) == 1  # refused before queuing: the sequence is untouched


async def test_huge_key_or_headers_are_dropped_too_as_a_last_resort() -> None:
    s = Sink(_broker(max_message_bytes=2_000))
    record = Record("t", 0, 1, b"k" * 5_000, b"v" * 5_000, (("big", b"h" * 5_000),), 0)
    async with s.sink:
        await s.sink.dead_letter(record, _result())
    (sent,) = s.broker.log
    assert (sent.key, sent.value) == (None, b"")
    assert "big" not in _headers(sent)
    assert _headers(sent)["signout.original.offset"] == b"1"
    assert s.errors("MessageSizeTooLargeError") == 3


async def test_big_headers_alone_cost_the_headers_but_not_the_key() -> None:
    s = Sink(_broker(max_message_bytes=2_000))
    record = Record("t", 0, 1, b"user-1", b"v" * 5_000, (("big", b"h" * 5_000),), 0)
    async with s.sink:
        await s.sink.dead_letter(record, _result())
    (sent,) = s.broker.log
    assert (sent.key, sent.value) == (b"user-1", b"")
    assert "big" not in _headers(sent)
    assert _headers(sent)["signout.error.value_dropped"] == b"true"


@pytest.mark.parametrize("error", [InvalidTopicError, TopicAuthorizationFailedError])
async def test_a_refused_write_raises_reports_failing_and_a_fixed_dlq_resumes(
    error: type[Exception],
) -> None:
    s = Sink(_broker())
    s.broker.failures.extend([error(), error()])
    async with s.sink:
        for _ in range(2):
            with pytest.raises(error):
                await s.sink.dead_letter(_record(), _result())
        assert s.health.failing
        await s.sink.dead_letter(_record(), _result())  # fixed: a fresh producer, no OutOfOrder
    assert len(s.broker.log) == 1
    assert s.health.reports == [True, True, False]
    assert s.errors(error.__name__) == 2
    assert s.errors("OutOfOrderSequenceNumber") == 0
    assert [p.stopped for p in s.broker.producers] == [True, True, True]


async def test_concurrent_writers_on_a_poisoned_producer_replace_it_once() -> None:
    s = Sink(_broker())
    async with s.sink:
        poisoned = s.broker.producers[0]
        s.broker.poisoned.add(poisoned.number)
        results = await asyncio.gather(
            *(s.sink.dead_letter(_record(offset=n), _result()) for n in range(5)),
            return_exceptions=True,
        )
        # The first to fail replaces the producer and reports; the others failed only because
        # the producer was poisoned, so they go again on its successor.
        assert [type(r) for r in results].count(OutOfOrderSequenceNumber) == 1
        assert results.count(None) == 4
        assert len(s.broker.producers) == 2
        await asyncio.gather(*(s.sink.dead_letter(_record(offset=n), _result()) for n in range(5)))
    assert len(s.broker.log) == 9


async def test_a_result_written_beside_a_too_large_dead_letter_is_not_lost() -> None:
    s = Sink(_broker(max_message_bytes=1_000))
    sink = KafkaDeadLetters(
        s.broker.make,
        KafkaSettings(dlq_topic="dlq", results_topic="results"),
        redact=True,
        metrics=s.metrics,
        health=s.health,
    )
    ok = Result(Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT)
    async with sink:
        # The too-large dead letter poisons the producer the result is queued on too.
        await asyncio.gather(
            sink.dead_letter(_record(b"v" * 5_000), _result()),
            *(sink.report(_record(offset=n), ok) for n in range(3)),
        )
    assert sorted(sent.topic for sent in s.broker.log) == ["dlq", "results", "results", "results"]
    assert len(s.broker.producers) == 2


async def test_a_producer_whose_sender_died_is_replaced_too() -> None:
    s = Sink(_broker())
    async with s.sink:
        s.broker.crashed.add(0)
        s.broker.crash_error = KafkaError
        with pytest.raises(KafkaError):
            await s.sink.dead_letter(_record(), _result())
        await s.sink.dead_letter(_record(), _result())
    assert len(s.broker.log) == 1
    assert s.errors("other") == 1  # KafkaError itself is not on the allow-list


async def test_a_metadata_timeout_keeps_the_producer() -> None:
    s = Sink(_broker())
    async with s.sink:
        s.broker.crashed.add(0)
        s.broker.crash_error = KafkaTimeoutError
        with pytest.raises(KafkaTimeoutError):
            await s.sink.dead_letter(_record(), _result())
        s.broker.crashed.clear()
        await s.sink.dead_letter(_record(), _result())
    assert len(s.broker.producers) == 1
    assert s.errors("KafkaTimeoutError") == 1


async def test_a_replacement_that_cannot_start_is_tried_again_on_the_next_failure() -> None:
    s = Sink(_broker())
    async with s.sink:
        s.broker.poisoned.add(0)
        s.broker.refuse_start = True
        with pytest.raises(OutOfOrderSequenceNumber):
            await s.sink.dead_letter(_record(), _result())
        s.broker.refuse_start = False
        with pytest.raises(OutOfOrderSequenceNumber):
            await s.sink.dead_letter(_record(), _result())
        await s.sink.dead_letter(_record(), _result())
    assert len(s.broker.log) == 1
    assert s.broker.producers[1].stopped  # the one that failed to start was closed


async def test_a_dead_letter_that_cannot_be_built_is_written_with_coordinates_only() -> None:
    s = Sink(_broker())
    broken = Record("t", 4, 99, b"k", b"v", (("only-a-name",),), 0)  # type: ignore[arg-type]
    async with s.sink:
        await s.sink.dead_letter(broken, _result(Reason.INTERNAL_ERROR))
    (sent,) = s.broker.log
    headers = _headers(sent)
    assert (sent.key, sent.value) == (None, b"")
    assert headers[VALUE_DROPPED] == b"true"
    assert headers["signout.original.partition"] == b"4"
    assert headers["signout.original.offset"] == b"99"
    assert headers["signout.error.reason"] == b"internal_error"


async def test_results_go_through_the_same_producer() -> None:
    s = Sink(_broker())
    sink = KafkaDeadLetters(
        s.broker.make,
        KafkaSettings(results_topic="results"),
        redact=True,
        metrics=s.metrics,
        health=s.health,
    )
    async with sink:
        await sink.report(_record(), Result(Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT))
    (sent,) = s.broker.log
    assert sent.topic == "results"
    assert json.loads(sent.value or b"")["outcome"] == "signed_out"


async def test_handler_and_sink_end_a_too_large_record_with_one_dead_letter() -> None:
    s = Sink(_broker(max_message_bytes=500))
    h = harness(sink=FakeSink())
    value = json.dumps(token_request(token="not-a-jwt", padding="x" * 400)).encode()
    handler: Handler = h.handler
    handler._sink = s.sink
    async with s.sink:
        result = await handler.handle(Record("signout.requests", 0, 5, b"k", value, (), 0))
    assert result.reason is Reason.TOKEN_INVALID
    (sent,) = s.broker.log
    assert sent.value == b""
    assert _headers(sent)[VALUE_DROPPED] == b"true"
    assert h.dlq("token_invalid") == 1


def test_the_producer_options_are_idempotent_with_acks_all() -> None:
    assert producer_options() == {"acks": "all", "enable_idempotence": True, "linger_ms": 5}


def test_the_error_label_is_bounded() -> None:
    assert dlq_write_error(InvalidTopicError()) == "InvalidTopicError"
    assert dlq_write_error(ValueError("user input here")) == "other"

    class Custom(Exception):
        pass

    assert dlq_write_error(Custom()) == "other"
