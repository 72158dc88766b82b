"""`dlq replay`: dead letters of chosen reasons back onto the source topic, once.

Each replayed record keeps its original key and headers (the `signout.*` ones are dropped, the
worker writes them afresh). Records whose token was redacted cannot be replayed and are skipped.
How far it got is committed in its own consumer group, so a second run replays nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata

from worker.connection import client_options
from worker.deadletter import carried_headers
from worker.errors import Reason
from worker.records import header
from worker.redaction import is_redacted_token
from worker.settings import KafkaSettings, load_settings

REPLAY_GROUP_SUFFIX = ".dlq-replay"


def add_commands(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="dead-letter topic tools")
    dlq_commands = dlq.add_subparsers(required=True, metavar="COMMAND")
    replay = dlq_commands.add_parser("replay", help="re-publish dead letters to the source topic")
    replay.add_argument(
        "--reason", action="append", required=True, choices=[r.value for r in Reason]
    )
    replay.add_argument("--dry-run", action="store_true")
    replay.set_defaults(func=_replay)


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
