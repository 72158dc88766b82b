"""The Kafka loop: poll into free slots, one task per record, pause when full, commit, rebalance.

Only this module and `deadletter` speak aiokafka. The loop never sleeps on work: when the window of
`max_in_flight` records is full (or Cognito is down and records sit in their retry loops) it pauses
the assigned partitions and keeps calling `getmany`, so the group never sees a missed poll. Offsets
are committed explicitly from `offsets.OffsetTracker`: every second, on revocation and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from worker.health import Health
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.records import Record, Result
from worker.settings import Settings

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200


class RecordHandler(Protocol):
    async def handle(self, record: Record) -> Result: ...


# Called with (partitions assigned here, partitions of the topic) after every rebalance.
AssignmentCallback = Callable[[int, int], None]


def consumer_options(settings: Settings) -> dict[str, Any]:
    kafka = settings.kafka
    return {
        "group_id": kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "max_poll_records": settings.max_in_flight,
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


class ConsumerLoop(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        handler: RecordHandler,
        metrics: Metrics,
        health: Health,
        on_assignment: AssignmentCallback | None = None,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._handler = handler
        self._metrics = metrics
        self._health = health
        self._on_assignment = on_assignment
        self._lag = 0
        self._committed_at_assignment: dict[TopicPartition, int] = {}
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._tasks: dict[asyncio.Task[Result], tuple[TopicPartition, int]] = {}
        self._slot_freed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._paused_by_us: set[TopicPartition] = set()
        self.joined = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def subscribe(self) -> None:
        self._consumer.subscribe([self._settings.kafka.topic], listener=self)

    async def run(self, stop: asyncio.Event, until_idle_seconds: float | None = None) -> None:
        """Consume until `stop` is set (or, given `until_idle_seconds`, caught up); then drain."""
        committer = asyncio.create_task(self._commit_every_interval(), name="commit-loop")
        idle = asyncio.create_task(self._stop_when_idle(stop, until_idle_seconds), name="idle")
        try:
            while not stop.is_set():
                await self._poll_once()
        finally:
            idle.cancel()
            committer.cancel()
            await asyncio.gather(idle, committer, return_exceptions=True)
            await self._drain()

    async def _poll_once(self) -> None:
        free = self._settings.max_in_flight - len(self._tasks)
        self._apply_backpressure(free)
        self._health.polled(backlog=bool(self._tasks) or self._lag > 0)
        if free <= 0:
            await self._consumer.getmany(timeout_ms=0)  # keeps the poll interval fresh
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), POLL_TIMEOUT_MS / 1000)
            return
        batch = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=free)
        for tp, messages in batch.items():
            for message in messages:
                self._start(tp, to_record(message))

    def _apply_backpressure(self, free: int) -> None:
        if free <= 0:
            to_pause = set(self._consumer.assignment()) - self._paused_by_us
            if to_pause:
                self._consumer.pause(*to_pause)
                self._paused_by_us |= to_pause
                log.info("window full: partitions paused", extra={"partitions": len(to_pause)})
        elif self._paused_by_us:
            assigned = set(self._consumer.assignment())
            self._consumer.resume(*(self._paused_by_us & assigned))
            log.info("partitions resumed", extra={"partitions": len(self._paused_by_us)})
            self._paused_by_us.clear()

    # -- one record ------------------------------------------------------------------------

    def _start(self, tp: TopicPartition, record: Record) -> None:
        self._tracker.start(tp, record.offset)
        task = asyncio.create_task(
            self._handler.handle(record), name=f"{tp.partition}@{record.offset}"
        )
        self._tasks[task] = (tp, record.offset)
        self._metrics.inflight.set(len(self._tasks))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Result]) -> None:
        tp, offset = self._tasks.pop(task)
        self._metrics.inflight.set(len(self._tasks))
        self._slot_freed.set()
        if task.cancelled():
            return  # not committed: redelivered to whoever owns the partition next
        error = task.exception()
        if error is not None:
            log.error(
                "record handling failed; its offset stays uncommitted",
                extra={"partition": tp.partition, "offset": offset, "error": type(error).__name__},
            )
            return
        self._tracker.done(tp, offset)
        self._health.progressed()

    # -- commits ---------------------------------------------------------------------------

    async def _commit_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._settings.commit_interval_seconds)
            await self.commit()
            self._update_lag()

    async def commit(self, partitions: Collection[TopicPartition] | None = None) -> None:
        """Commit every partition whose safe offset moved, always with explicit offsets."""
        async with self._commit_lock:
            offsets = self._tracker.to_commit()
            if partitions is not None:
                offsets = {tp: off for tp, off in offsets.items() if tp in partitions}
            if not offsets:
                return
            try:
                await self._consumer.commit(
                    {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()}
                )
            except KafkaError as exc:
                log.warning("commit failed; will retry", extra={"error": type(exc).__name__})
                return
            self._tracker.committed(offsets)
            self._metrics.last_commit.set(time.time())

    def _update_lag(self) -> None:
        """Lag per partition: the high watermark minus the group's committed offset."""
        total = 0
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            committed = self._tracker.committed_offset(tp)
            if committed is None:
                committed = self._committed_at_assignment.get(tp)
            if highwater is None or committed is None:
                continue
            lag = max(highwater - committed, 0)
            total += lag
            self._metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        self._lag = total

    # -- rebalance (called by aiokafka inside the group protocol) -----------------------------

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        revoked = set(revoked)
        if not revoked:
            return
        tasks = [t for t, (tp, _) in self._tasks.items() if tp in revoked]
        if tasks:
            await asyncio.wait(tasks, timeout=self._revoke_wait())
        await self.commit(revoked)
        await _cancel(t for t in tasks if not t.done())
        for tp in revoked:
            self._tracker.forget(tp)
            self._committed_at_assignment.pop(tp, None)
            self._paused_by_us.discard(tp)
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        log.info("partitions revoked", extra={"partitions": sorted(p.partition for p in revoked)})

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        assignment = self._consumer.assignment()
        self._metrics.assigned_partitions.set(len(assignment))
        topic_partitions = self._consumer.partitions_for_topic(self._settings.kafka.topic)
        if self._on_assignment is not None:
            self._on_assignment(len(assignment), len(topic_partitions or assignment))
        for tp in assigned:  # so lag shows even before this process commits anything
            self._committed_at_assignment[tp] = await self._consumer.committed(tp) or 0
        self.joined.set()
        self._health.joined(True)
        log.info(
            "partitions assigned", extra={"partitions": sorted(p.partition for p in assignment)}
        )

    def _revoke_wait(self) -> float:
        return min(self._settings.shutdown_timeout_seconds, 10.0)

    # -- shutdown ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Two phases: wait for in-flight records within the budget, cancel the rest, commit."""
        budget = self._settings.shutdown_timeout_seconds * 0.8
        tasks = list(self._tasks)
        if tasks:
            log.info("draining", extra={"inflight": len(tasks), "budget_seconds": budget})
            await asyncio.wait(tasks, timeout=budget)
        await _cancel(t for t in tasks if not t.done())
        await self.commit()

    async def _stop_when_idle(self, stop: asyncio.Event, seconds: float | None) -> None:
        if seconds is None:
            return
        idle_since: float | None = None
        while not stop.is_set():
            await asyncio.sleep(0.25)
            caught_up = await self._caught_up()
            now = time.monotonic()
            idle_since = (idle_since or now) if caught_up else None
            if idle_since is not None and now - idle_since >= seconds:
                log.info("caught up; stopping")
                stop.set()

    async def _caught_up(self) -> bool:
        assignment = self._consumer.assignment()
        if not self.joined.is_set() or self._tasks or not assignment:
            return False
        await self.commit()
        if self._tracker.to_commit():
            return False  # the last commit failed
        ends = await self._consumer.end_offsets(list(assignment))
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return False
        return True


async def _cancel(tasks: Any) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
