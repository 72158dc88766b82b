"""`publish`: validated sign-out requests onto the source topic, from flags or JSON lines.

Every request is validated against the schema before sending and keyed by the user, so one
user's requests stay on one partition. `--urgent` sends them to the urgent lane instead
(`SIGNOUT_KAFKA__URGENT_TOPIC`, same schema), where they overtake any bulk backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from worker.connection import producer as reliable_producer
from worker.errors import PermanentError
from worker.events import SignOutRequest, claims
from worker.settings import KafkaSettings, SettingsError, load_settings


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
    publish.add_argument(
        "--urgent",
        action="store_true",
        help="publish to the urgent lane (SIGNOUT_KAFKA__URGENT_TOPIC): overtakes bulk work",
    )
    publish.set_defaults(func=_publish)


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


def destination(kafka: KafkaSettings, *, urgent: bool) -> str:
    """The topic to publish to: the urgent lane only when it is configured."""
    if not urgent:
        return kafka.topic
    if kafka.urgent_topic is None:
        raise SettingsError("--urgent needs SIGNOUT_KAFKA__URGENT_TOPIC (the urgent lane's topic)")
    return kafka.urgent_topic


def _publish(args: argparse.Namespace) -> int:
    kafka = load_settings().kafka
    topic = destination(kafka, urgent=args.urgent)  # before reading stdin: fail fast
    requests = list(parse_lines(sys.stdin)) if args.stdin else [_from_flags(args)]
    asyncio.run(publish_requests(kafka, requests, topic=topic))
    for request in requests:
        print(request.event_id)
    return 0


async def publish_requests(
    kafka: KafkaSettings, requests: Iterable[SignOutRequest], *, topic: str | None = None
) -> None:
    """Publish `requests` to `topic` (default: the requests topic), all acknowledged on return."""
    producer = reliable_producer(kafka)
    await producer.start()
    try:
        to = topic or kafka.topic
        sends = [await producer.send(to, to_value(r), key=user_key(r)) for r in requests]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
