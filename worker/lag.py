"""Consumer lag per assigned partition: the high watermark minus the group's committed offset.

Before this process commits anything for a partition, the group's committed offset read at
assignment stands in, so lag shows from the first second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import Protocol

from aiokafka import TopicPartition

from worker.metrics import Metrics
from worker.offsets import OffsetTracker


class LagSource(Protocol):
    def assignment(self) -> frozenset[TopicPartition]: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    async def committed(self, partition: TopicPartition) -> int | None: ...


class LagMeter:
    def __init__(
        self, source: LagSource, tracker: OffsetTracker[TopicPartition], metrics: Metrics
    ) -> None:
        self._source = source
        self._tracker = tracker
        self._metrics = metrics
        self._at_assignment: dict[TopicPartition, int] = {}
        self.total = 0

    async def assigned(self, partitions: Collection[TopicPartition]) -> None:
        for partition in partitions:
            self._at_assignment[partition] = await self._source.committed(partition) or 0

    def revoked(self, partitions: Collection[TopicPartition]) -> None:
        for partition in partitions:
            self._at_assignment.pop(partition, None)
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(partition.topic, str(partition.partition))

    def update(self) -> int:
        total = 0
        for partition in self._source.assignment():
            highwater = self._source.highwater(partition)
            committed = self._tracker.committed_offset(partition)
            if committed is None:
                committed = self._at_assignment.get(partition)
            if highwater is None or committed is None:
                continue
            lag = max(highwater - committed, 0)
            total += lag
            gauge = self._metrics.consumer_lag.labels(
                topic=partition.topic, partition=str(partition.partition)
            )
            gauge.set(lag)
        self.total = total
        return total
