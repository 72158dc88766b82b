"""Records fetched but not yet started, bounded by count and bytes. Pure.

The consume loop fetches each record once, into this buffer; the window starts records from it as
slots free up. One FIFO per partition keeps each partition's offsets in order (the offset tracker
needs that); partitions take turns so that one partition's backlog does not starve the others.
A revoked partition's records are dropped without being started: the new owner reads them again
from the committed offset. Each partition belongs to a lane; `pop` takes from the lanes it is given,
in that order, so the window can start urgent records first and keep room for them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from worker.records import Lane, Record

P = TypeVar("P", bound=Hashable)

# Bookkeeping per record beyond its key, value and headers (object headers, deque slot).
RECORD_OVERHEAD_BYTES = 200


def record_size(record: Record) -> int:
    headers = sum(len(k) + len(v) for k, v in record.headers)
    return len(record.key or b"") + len(record.value or b"") + headers + RECORD_OVERHEAD_BYTES


class RecordBuffer(Generic[P]):
    def __init__(
        self,
        max_records: int,
        max_bytes: int,
        lane_of: Callable[[P], Lane] = lambda partition: Lane.BULK,
    ) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._lane_of = lane_of
        self._lanes: dict[Lane, OrderedDict[P, deque[Record]]] = {
            Lane.URGENT: OrderedDict(),
            Lane.BULK: OrderedDict(),
        }
        self._count = 0
        self._bytes = 0

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def room(self) -> int:
        """How many more records may be fetched now (0 once either bound is reached)."""
        if self._bytes >= self.max_bytes:
            return 0
        return max(self.max_records - self._count, 0)

    def add(self, partition: P, records: Iterable[Record]) -> None:
        """Append fetched records; a batch may overshoot the bounds by what one fetch returned."""
        queue = self._lanes[self._lane_of(partition)].setdefault(partition, deque())
        for record in records:
            queue.append(record)
            self._count += 1
            self._bytes += record_size(record)

    def pop(self, lanes: Sequence[Lane] = (Lane.URGENT, Lane.BULK)) -> Record | None:
        """The next record of the first of `lanes` that has one, its partitions in turn."""
        for lane in lanes:
            queues = self._lanes[lane]
            for partition, queue in queues.items():
                record = queue.popleft()
                if queue:
                    queues.move_to_end(partition)
                else:
                    del queues[partition]
                self._count -= 1
                self._bytes -= record_size(record)
                return record
        return None

    def waiting(self, lane: Lane) -> int:
        return sum(len(q) for q in self._lanes[lane].values())

    def drop(self, partitions: Collection[P]) -> int:
        """Forget the records of these partitions; returns how many were dropped."""
        dropped = 0
        for partition in partitions:
            queue = self._lanes[self._lane_of(partition)].pop(partition, None)
            if queue is None:
                continue
            dropped += len(queue)
            self._count -= len(queue)
            self._bytes -= sum(record_size(r) for r in queue)
        return dropped

    def partitions(self) -> list[P]:
        return [p for queues in self._lanes.values() for p in queues]
