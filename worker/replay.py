"""`dlq replay`: dead letters of chosen reasons back onto the topic they came from, once.

A dead letter goes back to its `signout.original.topic` when that is one of the worker's own
source topics (the requests topic or the urgent one), so an urgent request stays urgent. Any other
origin (a forged or stale header, or none) is never followed: the record goes to the requests topic
and the summary says how many did. Each replayed record keeps its original key and headers (the
`signout.*` ones are dropped, the worker writes them afresh). Records whose token was redacted
cannot be replayed and are skipped. How far it got is committed in its own consumer group, so a
second run replays nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata

from worker.connection import client_options
from worker.connection import producer as reliable_producer
from worker.deadletter import carried_headers
from worker.errors import Reason
from worker.records import header
from worker.redaction import is_redacted_token
from worker.settings import KafkaSettings, load_settings

REPLAY_GROUP_SUFFIX = ".dlq-replay"
ORIGIN_HEADER = "signout.original.topic"


@dataclass
class ReplaySummary:
    """What one run did: records replayed per destination topic, skipped, and redirected."""

    sent: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # redacted tokens
    redirected: int = 0  # origin not a source topic of this worker: sent to the requests topic

    @property
    def replayed(self) -> int:
        return sum(self.sent.values())

    def line(self, kafka: KafkaSettings) -> str:
        where = ", ".join(f"{n} to {topic}" for topic, n in sorted(self.sent.items()))
        text = f"replayed {self.replayed}" + (f" ({where})" if where else "")
        text += f", skipped {self.skipped} (redacted tokens cannot be replayed)"
        if self.redirected:
            text += (
                f"; {self.redirected} named no source topic of this worker as their origin"
                f" and went to {kafka.topic}"
            )
        return text


def add_commands(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="dead-letter topic tools")
    dlq_commands = dlq.add_subparsers(required=True, metavar="COMMAND")
    replay = dlq_commands.add_parser(
        "replay", help="re-publish dead letters to the topic they came from"
    )
    replay.add_argument(
        "--reason", action="append", required=True, choices=[r.value for r in Reason]
    )
    replay.add_argument("--dry-run", action="store_true")
    replay.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    kafka = load_settings().kafka
    summary = asyncio.run(replay(kafka, set(args.reason), dry_run=args.dry_run))
    print(summary.line(kafka))
    return 0


def destination(kafka: KafkaSettings, origin: str | None) -> tuple[str, bool]:
    """Where a dead letter goes back to, and whether its stated origin was overridden."""
    if origin is not None and origin in kafka.source_topics():
        return origin, False
    return kafka.topic, True


async def replay(kafka: KafkaSettings, reasons: set[str], *, dry_run: bool) -> ReplaySummary:
    consumer = AIOKafkaConsumer(
        kafka.dlq_topic,
        **client_options(kafka),
        group_id=kafka.group_id + REPLAY_GROUP_SUFFIX,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = reliable_producer(kafka)
    await consumer.start()
    await producer.start()
    try:
        return await _replay_to_end(consumer, producer, kafka, reasons, dry_run)
    finally:
        await consumer.stop()
        await producer.stop()


async def _replay_to_end(
    consumer: Any, producer: Any, kafka: KafkaSettings, reasons: set[str], dry_run: bool
) -> ReplaySummary:
    summary = ReplaySummary()
    ends = await _end_offsets(consumer)
    while await _behind(consumer, ends):
        batch = await consumer.getmany(timeout_ms=1000)
        for tp, messages in batch.items():
            for message in messages:
                await _replay_one(message, producer, kafka, reasons, dry_run, summary)
            if not dry_run and messages:
                await consumer.commit({tp: OffsetAndMetadata(messages[-1].offset + 1, "")})
    return summary


async def _replay_one(
    message: Any,
    producer: Any,
    kafka: KafkaSettings,
    reasons: set[str],
    dry_run: bool,
    summary: ReplaySummary,
) -> None:
    headers = message.headers or ()
    if header(headers, "signout.error.reason") not in reasons:
        return
    if is_redacted_token(message.value):
        summary.skipped += 1
        return
    topic, redirected = destination(kafka, header(headers, ORIGIN_HEADER))
    summary.sent[topic] += 1
    summary.redirected += redirected
    if not dry_run:
        carried = list(carried_headers(headers))
        await producer.send_and_wait(topic, message.value, key=message.key, headers=carried)


async def _behind(consumer: Any, ends: dict[Any, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def _end_offsets(consumer: Any) -> dict[Any, int]:
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=500)
    return dict(await consumer.end_offsets(list(consumer.assignment())))
