"""Dead-letter and results records (contracts.md §3, §4): built purely, published with an ack.

The DLQ record keeps the original key, value and headers, adds `signout.*` headers in the style of
Kafka Connect's `__connect.errors.*`, and redacts the access token of a permanently failed request
(`retries_exhausted` and `internal_error` records keep their value so they can be replayed).

`KafkaDeadLetters` owns the DLQ producer: its options, its start and stop, and its replacement.
The producer is idempotent; once the broker refused one of its batches for good (too large, invalid
topic, not authorised) the client's sequence number for that partition is ahead of the broker's and
every later batch fails with `OutOfOrderSequenceNumber`. aiokafka has no way to reset it, so the
producer is replaced by a fresh one (a new producer id starts its sequences at 0).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from worker import __version__
from worker.connection import producer
from worker.errors import INTERNAL_CODE, LOCAL_CODE, Reason
from worker.events import AdminTarget, TokenTarget
from worker.metrics import Metrics, dlq_write_error
from worker.records import Record, Result
from worker.redaction import redact_value, scrub, utf8
from worker.settings import KafkaSettings

log = logging.getLogger(__name__)

HEADER_PREFIX = "signout."
VALUE_DROPPED = "signout.error.value_dropped"
# Reasons whose dead letter keeps the original value so that it can be replayed as it is.
REPLAYABLE = frozenset({Reason.RETRIES_EXHAUSTED, Reason.INTERNAL_ERROR})
# The broker (or the client, against max_request_size) will never take this record as it is.
# A write neither acknowledged nor refused this long is given up and written again (aiokafka's
# own request timeout is 40 s); nothing waits on the broker without a bound.
DELIVERY_TIMEOUT_SECONDS = 45.0
# A key above this may itself be why a dead letter is too large: the last attempt drops it.
BIG_KEY_BYTES = 1024
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
# The value of a dead letter written without its own: empty, not null (aiokafka refuses a record
# with neither key nor value, and a null value is a tombstone on a compacted topic).
NO_VALUE = b""
# Refusals of `send()` before the record was queued: no sequence number was spent on it.
_BEFORE_QUEUING = (MessageSizeTooLargeError, KafkaTimeoutError)
# How long a replaced producer may take to stop before it is abandoned.
STOP_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def without_value(self) -> Outgoing:
        """The same dead letter without its value, saying so; the coordinates still find it."""
        return replace(self, value=NO_VALUE, headers=(*self.headers, (VALUE_DROPPED, b"true")))

    def keyed(self) -> Outgoing:
        """The key and the worker's own headers only: when the original headers are too big."""
        ours = tuple((k, v) for k, v in self.headers if _is_ours(k))
        return replace(self, value=NO_VALUE, headers=ours)

    def bare(self) -> Outgoing:
        """Only the worker's own headers: what is left when even the key is too big."""
        return replace(self.keyed(), key=None)


def _is_ours(name: str) -> bool:
    return name.lower().startswith(HEADER_PREFIX)


def carried_headers(headers: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """The original headers a dead letter (or a replay) carries: never `signout.*`, in any case."""
    return tuple((k, v) for k, v in headers if not _is_ours(k))


def dead_letter_record(
    record: Record, result: Result, *, topic: str, group_id: str, redact: bool, now: datetime
) -> Outgoing:
    """The full dead letter; raises only on a bug or a value that cannot be redacted."""
    keep_value = result.reason in REPLAYABLE or not redact
    value = record.value if keep_value else redact_value(record.value)
    error = result.error
    code = error.code if error else LOCAL_CODE
    message = scrub(error.message, _secrets(result)) if error else ""
    ours = _ours(record, result, group_id, now, code, message)
    headers = carried_headers(record.headers) + tuple((k, utf8(v)) for k, v in ours.items())
    if record.key is None and value is None:  # aiokafka refuses a record with neither
        value = NO_VALUE
    return Outgoing(topic, record.key, value, headers)


def minimal_dead_letter(
    record: Record, result: Result, *, topic: str, group_id: str, now: datetime
) -> Outgoing:
    """The fallback when the full dead letter cannot be built: coordinates and reason only."""
    message = "dead letter could not be built"
    ours = _ours(record, result, group_id, now, INTERNAL_CODE, message)
    ours[VALUE_DROPPED] = "true"
    return Outgoing(topic, None, NO_VALUE, tuple((k, utf8(v)) for k, v in ours.items()))


def _ours(
    record: Record, result: Result, group_id: str, now: datetime, code: str, message: str
) -> dict[str, str]:
    """The `signout.*` headers in the order of contracts.md §3."""
    return {
        "signout.error.reason": str(result.reason),
        "signout.error.code": code,
        "signout.error.message": message,
        "signout.original.topic": record.topic,
        "signout.original.partition": str(record.partition),
        "signout.original.offset": str(record.offset),
        "signout.original.timestamp": str(record.timestamp_ms),
        "signout.consumer.group": group_id,
        "signout.attempts": str(result.attempts),
        "signout.failed_at": _rfc3339(now),
        "signout.worker.version": __version__,
    }


def result_record(record: Record, result: Result, *, topic: str, now: datetime) -> Outgoing:
    request = result.request
    document = {
        "event_id": request.event_id if request else None,
        "outcome": str(result.outcome),
        "reason": str(result.reason),
        "error_code": result.error.code if result.error else None,
        "attempts": result.attempts,
        "target": _target_document(result),
        "requested_at": _rfc3339(request.requested_at)
        if request and request.requested_at
        else None,
        "completed_at": _rfc3339(now),
        "lane": str(result.lane),
    }
    value = utf8(json.dumps(document, separators=(",", ":")))
    return Outgoing(topic, record.key, value, ())


def _target_document(result: Result) -> dict[str, str] | None:
    target = result.target
    if isinstance(target, TokenTarget):
        return {"kind": "access_token", "fingerprint": target.fingerprint}
    if isinstance(target, AdminTarget):
        return {"kind": "admin", "user_pool_id": target.user_pool_id, "username": target.username}
    return None


def _secrets(result: Result) -> tuple[str, ...]:
    token = result.request.token if result.request else None
    return (token,) if token else ()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DeadLetterHealth(Protocol):
    def dead_letters_failing(self, failing: bool) -> None:
        """True when a dead-letter write failed, False when one was acknowledged."""


class Producer(Protocol):
    """The part of `AIOKafkaProducer` the sink uses."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...


ProducerFactory = Callable[[], Producer]


def kafka_producers(kafka: KafkaSettings) -> ProducerFactory:
    """A factory of DLQ producers for the configured cluster."""

    def make() -> Producer:
        made: Producer = producer(kafka)
        return made

    return make


class KafkaDeadLetters:
    """The `DeadLetterSink`: owns its producer (`async with`), replaces it once it is poisoned."""

    def __init__(
        self,
        producers: ProducerFactory,
        kafka: KafkaSettings,
        *,
        redact: bool,
        metrics: Metrics,
        health: DeadLetterHealth,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._producers = producers
        self._kafka = kafka
        self._redact = redact
        self._metrics = metrics
        self._health = health
        self._now = now
        self._producer: Producer | None = None
        self._generation = 0  # which producer a failed write used: only that one is replaced
        self._retired = asyncio.Event()  # set when the current producer is replaced
        self._replacing = asyncio.Lock()

    async def __aenter__(self) -> KafkaDeadLetters:
        producer = self._producers()
        await _start(producer)
        self._producer = producer
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def dead_letter(self, record: Record, result: Result) -> None:
        """Write the dead letter, smaller each time the broker says it is too large; raise else."""
        full = self._build(record, result)
        smaller = full.without_value()
        ladder = [full, smaller, smaller.keyed()]
        if len(full.key or b"") > BIG_KEY_BYTES:  # a small key never makes a record too large
            ladder.append(smaller.bare())
        for attempt in ladder:
            try:
                await self._send(attempt)
            except TOO_LARGE as exc:
                self._failed(exc, record)
                continue
            except Exception as exc:
                self._failed(exc, record)
                raise
            self._health.dead_letters_failing(False)
            return
        raise RecordTooLargeError("dead letter too large even without key, value and headers")

    def _build(self, record: Record, result: Result) -> Outgoing:
        topic, group, now = self._kafka.dlq_topic, self._kafka.group_id, self._now()
        try:
            return dead_letter_record(
                record, result, topic=topic, group_id=group, redact=self._redact, now=now
            )
        except Exception as exc:  # never leave a record without its dead letter
            log.error(
                "dead letter could not be built; writing coordinates only",
                extra={"error": type(exc).__name__, "offset": record.offset},
            )
            return minimal_dead_letter(record, result, topic=topic, group_id=group, now=now)

    def _failed(self, exc: Exception, record: Record) -> None:
        self._metrics.dlq_write_errors.labels(error=dlq_write_error(exc)).inc()
        self._health.dead_letters_failing(True)
        log.warning(
            "dead-letter write failed",
            extra={
                "error": type(exc).__name__,
                "partition": record.partition,
                "offset": record.offset,
            },
        )

    async def report(self, record: Record, result: Result) -> None:
        if self._kafka.results_topic:
            topic = self._kafka.results_topic
            await self._send(result_record(record, result, topic=topic, now=self._now()))

    async def _send(self, out: Outgoing) -> None:
        """One write; a write stranded on a replaced producer goes again on its successor."""
        async with asyncio.timeout(DELIVERY_TIMEOUT_SECONDS):
            while True:
                try:
                    await self._send_once(out)
                except ProducerReplaced:
                    continue
                return

    async def _send_once(self, out: Outgoing) -> None:
        producer, generation = self._current()
        retired = self._retired
        queued = producer.send(out.topic, value=out.value, key=out.key, headers=list(out.headers))
        try:
            delivery = await _within(asyncio.ensure_future(queued), retired, own=True)
        except ProducerReplaced:
            raise
        except _BEFORE_QUEUING:  # above max_request_size, or no metadata yet: producer is fine
            raise
        except Exception as exc:  # its sender task died: every later send would raise the same
            await self._replace_after(exc, generation)
            raise
        try:
            await _within(asyncio.ensure_future(delivery), retired, own=False)
        except ProducerReplaced:
            raise
        except Exception as exc:
            # Idempotent delivery retries transient errors itself: a failed batch is final and
            # its sequence number is now lost to the broker, so this producer is poisoned.
            await self._replace_after(exc, generation)
            raise

    def _current(self) -> tuple[Producer, int]:
        if self._producer is None:
            raise RuntimeError("KafkaDeadLetters used outside `async with`")
        return self._producer, self._generation

    async def _replace_after(self, exc: Exception, generation: int) -> None:
        """A write failed on producer `generation`. If another writer has replaced it meanwhile,
        the failure is the old producer's (poisoned, or closed while stopping), not this write's:
        it goes again on the successor. Otherwise this writer replaces it and the error stands."""
        if not await self._replace(generation):
            raise ProducerReplaced("the write failed on a producer since replaced") from exc

    async def _replace(self, generation: int) -> bool:
        """One fresh producer per poisoned one, however many writers saw it fail. False when
        another writer had already replaced producer `generation`."""
        async with self._replacing:
            if self._producer is None:
                return True  # closing: nothing to write again on
            if generation != self._generation:
                return False
            fresh = self._producers()
            try:
                await _start(fresh)
            except Exception as exc:  # the next failed write tries again
                log.warning(
                    "dead-letter producer restart failed", extra={"error": type(exc).__name__}
                )
                return True
            old, self._producer = self._producer, fresh
            self._generation += 1
            retired, self._retired = self._retired, asyncio.Event()
        log.info("dead-letter producer replaced", extra={"generation": self._generation})
        await _stop_quietly(old)  # flushes: most writes pending on it end here, one way or another
        retired.set()  # what is still pending is written again on the new producer
        return True


async def _within(step: asyncio.Future[Any], retired: asyncio.Event, *, own: bool) -> Any:
    """A step of a write (queuing, then the acknowledgement), bounded in time and by the
    producer's retirement. `own`: the step is ours to cancel (not one of aiokafka's futures)."""
    replaced = asyncio.ensure_future(retired.wait())
    try:
        await asyncio.wait(
            {step, replaced}, timeout=DELIVERY_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        replaced.cancel()
    if step.done():
        return step.result()  # raises the step's error
    if own:
        step.cancel()
    step.add_done_callback(_forget_outcome)
    if retired.is_set():
        raise ProducerReplaced("the producer was replaced before the write was acknowledged")
    raise KafkaTimeoutError("no acknowledgement within the delivery timeout")


def _forget_outcome(delivery: asyncio.Future[Any]) -> None:
    """A late outcome of a write given up on: retrieved, so it is not reported as lost."""
    if not delivery.cancelled():
        delivery.exception()


class ProducerReplaced(Exception):
    """A write was pending on a producer that has been replaced: write it again."""


async def _start(producer: Producer) -> None:
    try:
        await producer.start()
    except BaseException:
        await _stop_quietly(producer)  # a half-started client still holds connections
        raise


async def _stop_quietly(producer: Producer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("dead-letter producer stop failed", extra={"error": type(exc).__name__})
