"""The Kafka consumer as the worker sees it: a narrow `Source` Protocol and its aiokafka adapter.

Everything the consume loop, the committer and the rebalance listener do to Kafka goes through
`Source`, in the worker's own terms (`Record`, offsets as ints), so unit tests plug in an in-memory
fake. `KafkaSource` is the only place that turns aiokafka's records and offset types into ours.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from worker.records import Record
from worker.salvage import DECODE_FAILURES, positions, salvage
from worker.settings import KafkaSettings

__all__ = ["KafkaSource", "Source", "TopicPartition", "consumer_options", "to_record"]


class Source(Protocol):
    """What the worker needs of a Kafka consumer in a group."""

    def assignment(self) -> frozenset[TopicPartition]: ...

    async def fetch(
        self, partitions: Collection[TopicPartition], wait: float, max_records: int
    ) -> list[Record]:
        """Records fetched for `partitions` (all assigned when empty), at most `max_records`."""

    def pause(self, partitions: Collection[TopicPartition]) -> None: ...

    def resume(self, partitions: Collection[TopicPartition]) -> None: ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit explicit next-to-read offsets; raises on failure."""

    async def committed(self, partition: TopicPartition) -> int | None: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def end_offsets(
        self, partitions: Collection[TopicPartition]
    ) -> Mapping[TopicPartition, int]: ...

    async def position(self, partition: TopicPartition) -> int: ...

    def partitions_for_topic(self, topic: str) -> int | None:
        """How many partitions the topic has, when the metadata knows it."""


def consumer_options(kafka: KafkaSettings, max_poll_records: int) -> dict[str, Any]:
    return {
        "group_id": kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "max_poll_records": max_poll_records,
        "isolation_level": "read_committed",
    }


def to_record(message: Any) -> Record:
    headers = tuple((str(k), bytes(v or b"")) for k, v in (message.headers or ()))
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=headers,
        timestamp_ms=message.timestamp if message.timestamp is not None else -1,
    )


class KafkaSource:
    """`Source` over one `AIOKafkaConsumer`."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    def subscribe(self, topics: Collection[str], listener: ConsumerRebalanceListener) -> None:
        self._consumer.subscribe(list(topics), listener=listener)

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._consumer.assignment())

    async def fetch(
        self, partitions: Collection[TopicPartition], wait: float, max_records: int
    ) -> list[Record]:
        before = positions(self._consumer)
        try:
            batch = await self._consumer.getmany(
                *partitions, timeout_ms=int(wait * 1000), max_records=max_records
            )
        except DECODE_FAILURES as exc:
            # A record the client cannot decode: take its batch apart ourselves, then go on.
            salvaged = await salvage(self._consumer, exc, before)
            if salvaged is None:
                raise
            return [to_record(m) for m in salvaged.drained] + salvaged.records
        return [to_record(m) for messages in batch.values() for m in messages]

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        self._consumer.pause(*partitions)

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        self._consumer.resume(*partitions)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})

    async def committed(self, partition: TopicPartition) -> int | None:
        offset = await self._consumer.committed(partition)
        return None if offset is None else int(offset)

    def highwater(self, partition: TopicPartition) -> int | None:
        value = self._consumer.highwater(partition)
        return None if value is None else int(value)

    async def end_offsets(
        self, partitions: Collection[TopicPartition]
    ) -> Mapping[TopicPartition, int]:
        ends = await self._consumer.end_offsets(list(partitions))
        return {tp: int(end) for tp, end in ends.items()}

    async def position(self, partition: TopicPartition) -> int:
        return int(await self._consumer.position(partition))

    def partitions_for_topic(self, topic: str) -> int | None:
        partitions = self._consumer.partitions_for_topic(topic)
        return len(partitions) if partitions else None
