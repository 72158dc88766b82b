"""Putting requests on the source topic: `publish` (flags or JSON lines) and `dlq replay`.

`publish` validates every request against the schema before sending and keys it by the user, so
one user's requests stay on one partition. `dlq replay` re-publishes dead letters of chosen reasons
(with their original key and headers) and remembers how far it got in its own consumer group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from worker.connection import client_options
from worker.deadletter import carried_headers
from worker.errors import PermanentError, Reason
from worker.events import SignOutRequest, claims
from worker.records import header
from worker.redaction import is_redacted_token
from worker.settings import KafkaSettings, load_settings

REPLAY_GROUP_SUFFIX = ".dlq-replay"


def add_commands(commands: Any) -> None:
    publish = commands.add_parser("publish", help="validate and publish sign-out requests")
    publish.add_argument("--event-id", help="default: a new UUID")
    publish.add_argument("--user-pool-id")
    publish.add_argument("--username")
    publish.add_argument("--reason")
    publish.add_argument("--source", default="signout-worker-cli")
    publish.add_argument(
        "--stdin", action="store_true", help="read JSON lines (one request each) from stdin"
    )
    publish.set_defaults(func=_publish)
    dlq = commands.add_parser("dlq", help="dead-letter topic tools")
    dlq_commands = dlq.add_subparsers(required=True, metavar="COMMAND")
    replay = dlq_commands.add_parser("replay", help="re-publish dead letters to the source topic")
    replay.add_argument(
        "--reason", action="append", required=True, choices=[r.value for r in Reason]
    )
    replay.add_argument("--dry-run", action="store_true")
    replay.set_defaults(func=_replay)


def to_value(request: SignOutRequest) -> bytes:
    document = request.model_dump(mode="json", exclude_none=True)
    if request.token is not None:
        document["access_token"] = request.token
    return json.dumps(document, separators=(",", ":")).encode()


def user_key(request: SignOutRequest) -> bytes | None:
    """Key by the user: the username, else the token's `sub`/`username` claim."""
    if request.username:
        return request.username.encode()
    try:
        token_claims = claims(request.token or "")
    except PermanentError:
        return None
    subject = token_claims.get("username") or token_claims.get("sub")
    return str(subject).encode() if subject else None


def parse_lines(lines: Iterable[str]) -> Iterator[SignOutRequest]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield SignOutRequest.model_validate_json(line)
            except ValidationError as exc:
                message = f"line {number}: not a valid request ({exc.error_count()} errors)"
                raise SystemExit(message) from None


def _from_flags(args: argparse.Namespace) -> SignOutRequest:
    document = {
        "event_id": args.event_id or str(uuid.uuid4()),
        "user_pool_id": args.user_pool_id,
        "username": args.username,
        "reason": args.reason,
        "source": args.source,
    }
    return SignOutRequest.model_validate({k: v for k, v in document.items() if v is not None})


def _publish(args: argparse.Namespace) -> int:
    kafka = load_settings().kafka
    requests = list(parse_lines(sys.stdin)) if args.stdin else [_from_flags(args)]
    asyncio.run(publish_requests(kafka, requests))
    for request in requests:
        print(request.event_id)
    return 0


async def publish_requests(kafka: KafkaSettings, requests: Iterable[SignOutRequest]) -> None:
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sends = [await producer.send(kafka.topic, to_value(r), key=user_key(r)) for r in requests]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def _replay(args: argparse.Namespace) -> int:
    kafka = load_settings().kafka
    replayed, skipped = asyncio.run(replay(kafka, set(args.reason), dry_run=args.dry_run))
    print(f"replayed {replayed}, skipped {skipped} (redacted tokens cannot be replayed)")
    return 0


async def replay(kafka: KafkaSettings, reasons: set[str], *, dry_run: bool) -> tuple[int, int]:
    consumer = AIOKafkaConsumer(
        kafka.dlq_topic,
        **client_options(kafka),
        group_id=kafka.group_id + REPLAY_GROUP_SUFFIX,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        return await _replay_to_end(consumer, producer, kafka, reasons, dry_run)
    finally:
        await consumer.stop()
        await producer.stop()


async def _replay_to_end(
    consumer: Any, producer: Any, kafka: KafkaSettings, reasons: set[str], dry_run: bool
) -> tuple[int, int]:
    replayed = skipped = 0
    ends = await _end_offsets(consumer)
    while await _behind(consumer, ends):
        batch = await consumer.getmany(timeout_ms=1000)
        for tp, messages in batch.items():
            for message in messages:
                if header(message.headers or (), "signout.error.reason") not in reasons:
                    continue
                if is_redacted_token(message.value):
                    skipped += 1
                    continue
                replayed += 1
                if not dry_run:
                    headers = list(carried_headers(message.headers or ()))
                    await producer.send_and_wait(
                        kafka.topic, message.value, key=message.key, headers=headers
                    )
            if not dry_run and messages:
                await consumer.commit({tp: OffsetAndMetadata(messages[-1].offset + 1, "")})
    return replayed, skipped


async def _behind(consumer: Any, ends: dict[Any, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def _end_offsets(consumer: Any) -> dict[Any, int]:
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=500)
    return dict(await consumer.end_offsets(list(consumer.assignment())))
