"""Commits: soon after records finish, always explicit offsets, never past an unfinished record.

A finished record wakes the committer; it commits what `OffsetTracker` says is safe, then waits at
least `min_gap` before the next commit, so a crash redoes at most about `min_gap` of finished work
and a busy worker still sends at most one commit per gap. It also measures, per partition, how
long the commit point has been stuck while records wait behind it (the liveness probe uses that),
and the lag (high watermark minus committed offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from aiokafka import TopicPartition

from worker.offsets import OffsetTracker

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class CommitTarget(Protocol):
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...


class Committer:
    def __init__(
        self,
        target: CommitTarget,
        tracker: OffsetTracker[TopicPartition],
        *,
        min_gap: float,
        on_committed: Callable[[float], None] = lambda wall_time: None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._target = target
        self._tracker = tracker
        self._min_gap = min_gap
        self._on_committed = on_committed
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._moved_at: dict[TopicPartition, float] = {}
        self._safe: dict[TopicPartition, int | None] = {}

    def finished(self, partition: TopicPartition | None = None) -> None:
        """A record finished: commit soon."""
        self._wake.set()

    async def run(self) -> None:
        """Commit after each wake-up, at most once per `min_gap`; until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            await self.commit()
            await asyncio.sleep(self._min_gap)

    async def commit(self, partitions: Collection[TopicPartition] | None = None) -> bool:
        """Commit every partition whose safe offset moved; False when the commit failed."""
        async with self._lock:
            self._note_movement()
            offsets = self._tracker.to_commit()
            if partitions is not None:
                offsets = {tp: off for tp, off in offsets.items() if tp in partitions}
            if not offsets:
                return True
            try:
                await self._target.commit(offsets)
            except Exception as exc:  # any broker failure: the offsets stay to commit next time
                log.warning("commit failed; will retry", extra={"error": type(exc).__name__})
                return False
            self._tracker.committed(offsets)
            self._on_committed(self._wall_clock())
            return True

    def _note_movement(self) -> None:
        now = self._clock()
        for partition in self._tracker:
            safe = self._tracker.safe_offset(partition)
            idle = self._tracker.pending(partition) == 0
            if idle or self._safe.get(partition, -1) != safe:
                self._moved_at[partition] = now
            self._safe[partition] = safe

    def stalled_for(self) -> float:
        """The longest time any partition's commit point stood still with records waiting on it."""
        self._note_movement()
        now = self._clock()
        waiting = [p for p in self._tracker if self._tracker.pending(p) > 0]
        return max((now - self._moved_at.get(p, now) for p in waiting), default=0.0)

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        for partition in partitions:
            self._tracker.forget(partition)
            self._moved_at.pop(partition, None)
            self._safe.pop(partition, None)
