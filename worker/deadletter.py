"""Dead-letter and results records (contracts.md §3, §4): built purely, published with an ack.

The DLQ record keeps the original key, value and headers, adds `signout.*` headers in the style of
Kafka Connect's `__connect.errors.*`, and redacts the access token of a permanently failed request
(a `retries_exhausted` record keeps its value so it can be replayed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from worker import __version__
from worker.errors import LOCAL_CODE, Reason
from worker.events import AdminTarget, TokenTarget, fingerprint, scrub
from worker.records import Record, Result
from worker.settings import KafkaSettings

HEADER_PREFIX = "signout."


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def redact_value(value: bytes | None) -> bytes | None:
    """Replace a JSON object's `access_token` with its fingerprint; other payloads as they came."""
    if value is None:
        return None
    try:
        document = json.loads(value)
    except ValueError:
        return value
    token = document.get("access_token") if isinstance(document, dict) else None
    if not isinstance(token, str):
        return value
    document["access_token"] = "redacted:" + fingerprint(token)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def dead_letter_record(
    record: Record, result: Result, *, topic: str, group_id: str, redact: bool, now: datetime
) -> Outgoing:
    keep_value = result.reason is Reason.RETRIES_EXHAUSTED or not redact
    value = record.value if keep_value else redact_value(record.value)
    error = result.error
    secrets = _secrets(result)
    ours = {
        "signout.error.reason": str(result.reason),
        "signout.error.code": error.code if error else LOCAL_CODE,
        "signout.error.message": scrub(error.message, secrets) if error else "",
        "signout.original.topic": record.topic,
        "signout.original.partition": str(record.partition),
        "signout.original.offset": str(record.offset),
        "signout.original.timestamp": str(record.timestamp_ms),
        "signout.consumer.group": group_id,
        "signout.attempts": str(result.attempts),
        "signout.failed_at": _rfc3339(now),
        "signout.worker.version": __version__,
    }
    carried = tuple((k, v) for k, v in record.headers if not k.startswith(HEADER_PREFIX))
    headers = carried + tuple((k, v.encode()) for k, v in ours.items())
    return Outgoing(topic, record.key, value, headers)


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
    }
    value = json.dumps(document, separators=(",", ":")).encode()
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


class KafkaDeadLetters:
    """The `DeadLetterSink` over one idempotent producer (acks=all)."""

    def __init__(self, producer: AIOKafkaProducer, kafka: KafkaSettings, redact: bool) -> None:
        self._producer = producer
        self._kafka = kafka
        self._redact = redact

    async def dead_letter(self, record: Record, result: Result) -> None:
        out = dead_letter_record(
            record,
            result,
            topic=self._kafka.dlq_topic,
            group_id=self._kafka.group_id,
            redact=self._redact,
            now=datetime.now(UTC),
        )
        await self._send(out)

    async def report(self, record: Record, result: Result) -> None:
        if self._kafka.results_topic:
            topic = self._kafka.results_topic
            await self._send(result_record(record, result, topic=topic, now=datetime.now(UTC)))

    async def _send(self, out: Outgoing) -> None:
        await self._producer.send_and_wait(
            out.topic, value=out.value, key=out.key, headers=list(out.headers)
        )


def producer_options(kafka: KafkaSettings) -> dict[str, Any]:
    return {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
