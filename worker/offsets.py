"""Which offset of each partition is safe to commit, when records finish out of order. Pure.

Records of one partition are started in increasing offset order (possibly with gaps: compaction,
transaction markers) and finish in any order. The committable offset is the next one to read after
the longest finished prefix: the oldest unfinished offset, or one past the last started when all
are finished. Nothing is ever committed past an unfinished record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class PartitionOffsets:
    """Started and finished offsets of one partition."""

    __slots__ = ("_committed", "_next", "_started", "_unfinished")

    def __init__(self) -> None:
        self._started: deque[int] = deque()  # unfinished prefix first, increasing
        # Membership, not a range check: a done() for a gap offset must not count as finished.
        self._unfinished: set[int] = set()
        self._next: int | None = None  # one past the highest offset started
        self._committed: int | None = None

    def start(self, offset: int) -> None:
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} started out of order (next is {self._next})")
        self._started.append(offset)
        self._unfinished.add(offset)
        self._next = offset + 1

    def done(self, offset: int) -> None:
        if offset in self._unfinished:
            self._unfinished.discard(offset)
            self._advance()

    def _advance(self) -> None:
        while self._started and self._started[0] not in self._unfinished:
            self._started.popleft()

    @property
    def pending(self) -> int:
        """Offsets started but not finished."""
        return len(self._unfinished)

    def safe_offset(self) -> int | None:
        """The offset a commit may name now (next to read), or None before anything started."""
        if self._started:
            return self._started[0]
        return self._next

    def to_commit(self) -> int | None:
        """The safe offset if it moved since `committed` was last called with it."""
        safe = self.safe_offset()
        return None if safe is None or safe == self._committed else safe

    def committed(self, offset: int) -> None:
        self._committed = offset

    @property
    def last_committed(self) -> int | None:
        return self._committed


class OffsetTracker(Generic[P]):
    """Per-partition tracking; partitions are any hashable key (a TopicPartition in the worker)."""

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionOffsets] = {}

    def start(self, partition: P, offset: int) -> None:
        self._partitions.setdefault(partition, PartitionOffsets()).start(offset)

    def done(self, partition: P, offset: int) -> None:
        state = self._partitions.get(partition)
        if state is not None:
            state.done(offset)

    def to_commit(self) -> dict[P, int]:
        """Every partition whose safe offset moved since its last acknowledged commit."""
        moves = {p: s.to_commit() for p, s in self._partitions.items()}
        return {p: off for p, off in moves.items() if off is not None}

    def committed(self, offsets: dict[P, int]) -> None:
        for partition, offset in offsets.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed(offset)

    def safe_offset(self, partition: P) -> int | None:
        state = self._partitions.get(partition)
        return None if state is None else state.safe_offset()

    def committed_offset(self, partition: P) -> int | None:
        state = self._partitions.get(partition)
        return None if state is None else state.last_committed

    def pending(self, partition: P | None = None) -> int:
        if partition is not None:
            state = self._partitions.get(partition)
            return 0 if state is None else state.pending
        return sum(s.pending for s in self._partitions.values())

    def forget(self, partition: P) -> None:
        """Drop a revoked partition: its unfinished records will be redelivered to the new owner."""
        self._partitions.pop(partition, None)

    def __iter__(self) -> Iterator[P]:
        return iter(self._partitions)
