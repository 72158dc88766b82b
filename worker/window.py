"""The window of records being worked on: at most `capacity` tasks, fed from the fetch buffer.

In the style of aiojobs' scheduler: `offer` buffers fetched records and starts as many as there
are free slots; a finished task immediately starts the next buffered record (no wait for the next
poll); `settle` waits for chosen tasks with a deadline, then cancels the rest with a deadline.
Offsets are marked started and done in the shared `OffsetTracker`; a record whose task was
cancelled is never marked done, so it is never committed and is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Any

from aiokafka import TopicPartition

from worker.buffer import RecordBuffer
from worker.offsets import OffsetTracker
from worker.records import Record

log = logging.getLogger(__name__)

RunRecord = Callable[[Record], Coroutine[Any, Any, object]]
Task = asyncio.Task[object]


def partition_of(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


class Window:
    def __init__(
        self,
        capacity: int,
        run: RunRecord,
        tracker: OffsetTracker[TopicPartition],
        buffer: RecordBuffer[TopicPartition],
        *,
        on_size: Callable[[int], None] = lambda size: None,
        on_done: Callable[[TopicPartition], None] = lambda partition: None,
    ) -> None:
        self.capacity = capacity
        self.buffer = buffer
        self._run = run
        self._tracker = tracker
        self._on_size = on_size
        self._on_done = on_done
        self._tasks: dict[Task, tuple[TopicPartition, int]] = {}
        # Bumped on revocation: a late task of an earlier assignment must not mark a new one done.
        self._generation: dict[TopicPartition, int] = {}
        self._born: dict[Task, int] = {}
        self._changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def free(self) -> int:
        return max(self.capacity - len(self._tasks), 0)

    def offer(self, records: Iterable[Record]) -> None:
        """Buffer fetched records (in offset order per partition) and start what fits."""
        by_partition: dict[TopicPartition, list[Record]] = {}
        for record in records:
            by_partition.setdefault(partition_of(record), []).append(record)
        for partition, batch in by_partition.items():
            self.buffer.add(partition, batch)
        self._fill()

    def _fill(self) -> None:
        while not self._closed and len(self._tasks) < self.capacity:
            record = self.buffer.pop()
            if record is None:
                return
            self._start(record)

    def _start(self, record: Record) -> None:
        partition = partition_of(record)
        self._tracker.start(partition, record.offset)
        task: Task = asyncio.create_task(
            self._run(record), name=f"{record.topic}/{record.partition}@{record.offset}"
        )
        self._tasks[task] = (partition, record.offset)
        self._born[task] = self._generation.get(partition, 0)
        task.add_done_callback(self._finished)
        self._on_size(len(self._tasks))

    def _finished(self, task: Task) -> None:
        partition, offset = self._tasks.pop(task)
        current = self._born.pop(task) == self._generation.get(partition, 0)
        self._changed.set()
        if current and not task.cancelled():
            error = task.exception()
            if error is None:
                self._tracker.done(partition, offset)
                self._on_done(partition)
            else:  # the handler is total; this is a bug, and the offset must not move past it
                log.error(
                    "record task failed without an outcome; its offset stays uncommitted",
                    extra={"task": task.get_name(), "error": type(error).__name__},
                )
        self._fill()
        self._on_size(len(self._tasks))

    async def wait_for_change(self, seconds: float) -> None:
        """Return when a task finishes (or after `seconds`)."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
        except TimeoutError:
            return

    def tasks(self, partitions: Collection[TopicPartition] | None = None) -> list[Task]:
        return [t for t, (p, _) in self._tasks.items() if partitions is None or p in partitions]

    def revoke(self, partitions: Collection[TopicPartition]) -> list[Task]:
        """Drop the buffered records of `partitions`; their running tasks, to be settled."""
        dropped = self.buffer.drop(partitions)
        for partition in partitions:
            self._generation[partition] = self._generation.get(partition, 0) + 1
        if dropped:
            log.info("dropped buffered records of revoked partitions", extra={"records": dropped})
        return self.tasks(partitions)

    def close(self) -> list[Task]:
        """Start nothing more; every running task, to be settled."""
        self._closed = True
        return self.tasks()


async def settle(tasks: Collection[Task], wait: float, cancel_wait: float) -> int:
    """Wait up to `wait` for `tasks`, cancel the rest and wait up to `cancel_wait` for them.

    Returns how many are still running after both deadlines (a task that ignores cancellation).
    """
    pending = [t for t in tasks if not t.done()]
    if pending and wait > 0:
        _, still = await asyncio.wait(pending, timeout=wait)
        pending = list(still)
    for task in pending:
        task.cancel()
    if pending:
        _, still = await asyncio.wait(pending, timeout=cancel_wait)
        pending = list(still)
    if pending:
        log.error("tasks did not stop after cancellation", extra={"tasks": len(pending)})
    return len(pending)
