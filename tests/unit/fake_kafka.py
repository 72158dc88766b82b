"""An in-memory `Source`: partitions with records, an assignment, and a log of every commit."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

from aiokafka import TopicPartition

from worker.records import Record


def record(partition: int, offset: int, topic: str = "t", value: bytes = b"{}") -> Record:
    return Record(topic, partition, offset, None, value)


class FakeSource:
    def __init__(self, partitions: int = 2, topic: str = "t") -> None:
        self.topic = topic
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.assigned: set[TopicPartition] = set(self.partitions)
        self.logs: dict[TopicPartition, list[Record]] = {tp: [] for tp in self.partitions}
        self.positions: dict[TopicPartition, int] = dict.fromkeys(self.partitions, 0)
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.committed_event = asyncio.Event()
        self.fetches = 0
        self.fail_commits = 0

    def produce(self, partition: int, count: int) -> None:
        tp = self.partitions[partition]
        start = len(self.logs[tp])
        self.logs[tp].extend(record(tp.partition, o, tp.topic) for o in range(start, start + count))

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self.assigned)

    async def fetch(
        self, partitions: Collection[TopicPartition], wait: float, max_records: int
    ) -> list[Record]:
        self.fetches += 1
        out: list[Record] = []
        for tp in sorted(partitions or self.assigned):
            if tp in self.paused or tp not in self.assigned:
                continue
            take = self.logs[tp][self.positions[tp] : self.positions[tp] + max_records - len(out)]
            self.positions[tp] += len(take)
            out.extend(take)
        return out

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        self.paused |= set(partitions)

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        self.paused -= set(partitions)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise ConnectionError("broker away")
        self.commits.append(dict(offsets))
        self.committed_event.set()
        self.committed_offsets.update(offsets)

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offsets.get(partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.logs[partition])

    async def end_offsets(
        self, partitions: Collection[TopicPartition]
    ) -> Mapping[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in partitions}

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]

    def partitions_for_topic(self, topic: str) -> int | None:
        return len(self.partitions) if topic == self.topic else None
