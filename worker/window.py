"""The window of records being worked on: at most `capacity` tasks, fed from the fetch buffer.

In the style of aiojobs' scheduler: `offer` buffers fetched records and starts as many as there
are free slots; a finished task immediately starts the next buffered record (no wait for the next
poll); `settle` waits for chosen tasks with a deadline, then cancels the rest with a deadline.
Offsets are marked started and done in the shared `OffsetTracker`; a record whose task was
cancelled is never marked done, so it is never committed and is redelivered.

A slot is held by a record being worked on, not by one waiting for its rate budget: a record that
waits for its budget is *parked* (`parked()`), gives its slot to the next buffered record and takes
it back when its turn comes. So a backlog waiting for one budget (one Region, say) never keeps the
records of another budget out of the window. Parked records have an allowance of their own
(`parking`, by count and bytes) on top of the buffer's bounds: a backlog of one budget up to that
size is read past, so a record of another budget behind it is reached; beyond it, parked records
count against the buffer (the consume loop adds them up) and reading stops. A parked record has
made no call, so a revoked partition's parked records, and all of them on close, are cancelled at
once (redelivered to the next owner) rather than waited for. Urgent records are started before bulk
ones and bulk records never hold the last `urgent_reserve` slots. A record keeps its slot for
the first `park_grace` seconds of its wait: a budget far above what the window can use spaces its
calls by less than that, and giving the slot away then would only start more records to wait.

A parked record is a task, and a task costs a few kilobytes. So once `defer_after` tasks wait for
one budget, further bulk records of that budget are not started at all: they are *deferred*, kept
as records (marked started in the tracker, so nothing is committed past them) and started in order
as that budget's parked tasks get their calls. Telling a record's budget costs a decode, so it is
asked only while that many tasks are parked. Deferred records count as parked for the allowance.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Collection, Coroutine, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from worker.buffer import RecordBuffer, record_size
from worker.offsets import OffsetTracker
from worker.records import Lane, Record

log = logging.getLogger(__name__)

RunRecord = Callable[[Record], Coroutine[Any, Any, object]]
# The budget a record will wait for (None: not known, start it).
BudgetOf = Callable[[Record], Hashable | None]
Task = asyncio.Task[object]


def partition_of(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


@dataclass(frozen=True, slots=True)
class _Entry:
    partition: TopicPartition
    offset: int
    lane: Lane
    generation: int
    size: int


@dataclass(frozen=True, slots=True)
class Parking:
    """How many records (and bytes) may wait for a budget before they count as buffered."""

    records: int = 0
    bytes: int = 0


class Window:
    def __init__(
        self,
        capacity: int,
        run: RunRecord,
        tracker: OffsetTracker[TopicPartition],
        buffer: RecordBuffer[TopicPartition],
        *,
        lane_of: Callable[[TopicPartition], Lane] = lambda partition: Lane.BULK,
        urgent_reserve: int = 0,
        parking: Parking = Parking(),
        budget_of: BudgetOf = lambda record: None,
        defer_after: int = 0,
        park_grace: float = 0.0,
        on_size: Callable[[int], None] = lambda size: None,
        on_done: Callable[[TopicPartition], None] = lambda partition: None,
    ) -> None:
        self.capacity = capacity
        self._lane_of = lane_of
        self._bulk_capacity = max(capacity - urgent_reserve, 1)
        self.buffer = buffer
        self.tracker = tracker
        self._run = run
        self._tracker = tracker
        self._on_size = on_size
        self._on_done = on_done
        self._tasks: dict[Task, _Entry] = {}
        self._parked: set[Task] = set()
        self._parking = parking
        self._parked_bytes = 0
        self._budget_of = budget_of
        self._defer_after = defer_after  # 0: never defer
        self._park_grace = park_grace
        self._parked_for: Counter[Hashable] = Counter()  # parked tasks per budget
        self._park_keys: dict[Task, Hashable] = {}
        self._deferred: dict[Hashable, deque[Record]] = {}
        self._deferred_count = 0
        self._deferred_bytes = 0
        self._active: Counter[Lane] = Counter()
        # Bumped on revocation: a late task of an earlier assignment must not mark a new one done.
        self._generation: dict[TopicPartition, int] = {}
        self._changed = asyncio.Event()
        self._closed = False
        self._fill_pending = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def free(self) -> int:
        return max(self.capacity - self.active, 0)

    @property
    def active(self) -> int:
        """Records holding a slot (not parked)."""
        return self._active.total()

    @property
    def parked_count(self) -> int:
        """Records waiting for a budget: parked tasks and deferred records."""
        return len(self._parked) + self._deferred_count

    @property
    def deferred_count(self) -> int:
        return self._deferred_count

    @property
    def parked_over_allowance(self) -> int:
        """Parked records beyond the parking allowance: all of them once its bytes are spent."""
        if self._parked_bytes + self._deferred_bytes > self._parking.bytes:
            return self.parked_count
        return max(self.parked_count - self._parking.records, 0)

    def offer(self, records: Iterable[Record]) -> None:
        """Buffer fetched records (in offset order per partition) and start what fits."""
        by_partition: dict[TopicPartition, list[Record]] = {}
        for record in records:
            by_partition.setdefault(partition_of(record), []).append(record)
        for partition, batch in by_partition.items():
            self.buffer.add(partition, batch)
        self._fill()

    def _fill(self) -> None:
        while not self._closed:
            lanes = self._open_lanes()
            if not lanes:
                return
            record = self.buffer.pop((Lane.URGENT,))  # urgent first, always
            if record is None and Lane.BULK in lanes:
                deferred = self._next_deferred()  # older than what is buffered
                if deferred is not None:
                    self._launch(deferred)
                    continue
                record = self.buffer.pop((Lane.BULK,))
            if record is None:
                return
            self._start(record)

    def _next_deferred(self) -> Record | None:
        """The oldest deferred record of a budget with room for another parked task."""
        for key, records in self._deferred.items():
            if self._parked_for[key] < self._defer_after:
                record = records.popleft()
                if not records:
                    del self._deferred[key]
                self._deferred_count -= 1
                self._deferred_bytes -= record_size(record)
                return record
        return None

    def _open_lanes(self) -> tuple[Lane, ...]:
        if self.active >= self.capacity:
            return ()
        if self._active[Lane.BULK] >= self._bulk_capacity:
            return (Lane.URGENT,)
        return (Lane.URGENT, Lane.BULK)

    @contextmanager
    def parked(self, budget: Hashable | None = None) -> Iterator[None]:
        """Around a wait for a rate budget: the slot goes to the next record meanwhile."""
        task = asyncio.current_task()
        entry = self._tasks.get(task) if task is not None else None
        if task is None or entry is None or task in self._parked:
            yield
            return
        self._parked.add(task)
        self._parked_bytes += entry.size
        if budget is not None:
            self._park_keys[task] = budget
            self._parked_for[budget] += 1
        self._active[entry.lane] -= 1
        self._fill_soon()  # only if the wait is real: a record granted meanwhile keeps its slot
        try:
            yield
        finally:
            if task in self._parked:
                self._unpark(task, entry)
                self._active[entry.lane] += 1
                self._fill()  # a deferred record of this budget may start now

    def _fill_soon(self) -> None:
        if self._fill_pending:
            return
        self._fill_pending = True
        loop = asyncio.get_running_loop()
        if self._park_grace > 0:
            loop.call_later(self._park_grace, self._scheduled_fill)
        else:
            loop.call_soon(self._scheduled_fill)

    def _scheduled_fill(self) -> None:
        self._fill_pending = False
        self._fill()

    def _unpark(self, task: Task, entry: _Entry) -> None:
        self._parked.discard(task)
        self._parked_bytes -= entry.size
        budget = self._park_keys.pop(task, None)
        if budget is not None:
            self._parked_for[budget] -= 1
            if not self._parked_for[budget]:
                del self._parked_for[budget]

    def _start(self, record: Record) -> None:
        partition = partition_of(record)
        self._tracker.start(partition, record.offset)
        if self._defer(record, partition):
            return
        self._launch(record)

    def _defer(self, record: Record, partition: TopicPartition) -> bool:
        """Keep a bulk record as a record while its budget already has enough parked tasks."""
        if not self._defer_after or len(self._parked) < self._defer_after:
            return False
        if self._lane_of(partition) is not Lane.BULK:
            return False
        budget = self._budget_of(record)
        if budget is None or self._parked_for[budget] < self._defer_after:
            return False
        self._deferred.setdefault(budget, deque()).append(record)
        self._deferred_count += 1
        self._deferred_bytes += record_size(record)
        return True

    def _launch(self, record: Record) -> None:
        """Start the task of a record already marked started in the tracker."""
        partition = partition_of(record)
        lane = self._lane_of(partition)
        task: Task = asyncio.create_task(
            self._run(record), name=f"{record.topic}/{record.partition}@{record.offset}"
        )
        generation = self._generation.get(partition, 0)
        self._tasks[task] = _Entry(partition, record.offset, lane, generation, record_size(record))
        self._active[lane] += 1
        task.add_done_callback(self._finished)
        self._on_size(len(self._tasks))

    def _finished(self, task: Task) -> None:
        entry = self._tasks.pop(task)
        partition, offset = entry.partition, entry.offset
        if task in self._parked:
            self._unpark(task, entry)
        else:
            self._active[entry.lane] -= 1
        current = entry.generation == self._generation.get(partition, 0)
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
        entries = self._tasks.items()
        return [t for t, e in entries if partitions is None or e.partition in partitions]

    def revoke(self, partitions: Collection[TopicPartition]) -> list[Task]:
        """Drop the buffered records of `partitions` and cancel those parked for a budget (no
        call in flight: waiting for them would only hold the whole group's rebalance up); their
        tasks, to be settled."""
        dropped = self.buffer.drop(partitions) + self._drop_deferred(partitions)
        if dropped:
            log.info("dropped buffered records of revoked partitions", extra={"records": dropped})
        tasks = self.tasks(partitions)
        self._cancel_parked(tasks, "cancelled records of revoked partitions waiting for a budget")
        return tasks

    def _drop_deferred(self, partitions: Collection[TopicPartition]) -> int:
        dropped = 0
        for budget in list(self._deferred):
            kept: deque[Record] = deque()
            for record in self._deferred[budget]:
                if partition_of(record) in partitions:
                    dropped += 1
                    self._deferred_bytes -= record_size(record)
                else:
                    kept.append(record)
            if kept:
                self._deferred[budget] = kept
            else:
                del self._deferred[budget]
        self._deferred_count -= dropped
        return dropped

    def _cancel_parked(self, tasks: Collection[Task], message: str) -> None:
        waiting = [task for task in tasks if task in self._parked]
        for task in waiting:
            task.cancel()
        if waiting:
            log.info(message, extra={"records": len(waiting)})

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """After the hand-over: a task of these partitions that ends later counts for nothing."""
        for partition in partitions:
            self._generation[partition] = self._generation.get(partition, 0) + 1

    def close(self) -> list[Task]:
        """Start nothing more, cancel the parked records (no call made: they are redelivered);
        every task, to be settled."""
        self._closed = True
        tasks = self.tasks()
        self._cancel_parked(tasks, "stopping: cancelled records waiting for a budget")
        return tasks


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
