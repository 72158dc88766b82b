"""The consume loop: keep the fetch buffer topped up, keep the group membership alive, drain.

Each record is fetched once: the loop asks Kafka for at most the buffer's free room; aiokafka keeps
the rest of what it fetched until asked.
The window starts buffered records as its slots free up. While the buffer is full the loop still
calls `fetch` at least every `keepalive` seconds, because aiokafka leaves the group after
`max_poll_interval_ms` without one; only if the buffer is full even then are the partitions paused
(aiokafka drops what it prefetched for a paused partition, so pausing is the rare case), and they
are resumed once the buffer is down to half. Records parked in the window (waiting for a rate
budget) beyond the window's parking allowance count against the buffer's bounds too. The urgent
topic's partitions are never paused and are fetched on every turn of the loop, so an urgent record
is read within a poll however full the buffer is with bulk work. On stop: cancel what is parked,
drain the rest of the window within its budget, cancel what is left with a deadline, commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from aiokafka import TopicPartition

from worker.committer import Committer
from worker.health import Health
from worker.lag import LagMeter
from worker.source import Source
from worker.window import Window, settle

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LoopTimings:
    # How long one fetch waits for records when the buffer has room.
    poll_seconds: float = 0.2
    # Fetch at least this often even with a full buffer (aiokafka's max_poll_interval_ms).
    keepalive_seconds: float = 10.0
    # Shutdown: wait this long for in-flight records, then cancel within `cancel_seconds`.
    drain_seconds: float = 20.0
    cancel_seconds: float = 2.0


class ConsumerLoop:
    def __init__(
        self,
        source: Source,
        window: Window,
        committer: Committer,
        lag: LagMeter,
        health: Health,
        timings: LoopTimings,
        *,
        urgent_topic: str | None = None,
        clock: Clock = time.monotonic,
        on_commit_stall: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._urgent_topic = urgent_topic
        self._source = source
        self._on_commit_stall = on_commit_stall
        self._window = window
        self._committer = committer
        self._lag = lag
        self._health = health
        self._timings = timings
        self._clock = clock
        self._last_fetch = clock()
        self._paused: set[TopicPartition] = set()
        self.joined = asyncio.Event()

    async def run(self, stop: asyncio.Event, until_idle_seconds: float | None = None) -> None:
        """Consume until `stop` is set (or, given `until_idle_seconds`, caught up); then drain."""
        helpers = [
            asyncio.create_task(self._committer.run(), name="committer"),
            asyncio.create_task(self._measure(), name="lag"),
        ]
        if until_idle_seconds is not None:
            idle = IdleStop(self._source, self._window, self._committer, self.joined)
            helpers.append(asyncio.create_task(idle.run(stop, until_idle_seconds), name="idle"))
        try:
            while not stop.is_set():
                await self._poll_once()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._drain()

    async def _poll_once(self) -> None:
        self._health.polled(backlog=len(self._window) > 0 or self._lag.total > 0)
        stalled = self._committer.stalled_for()
        self._health.commit_stalled(stalled)
        self._on_commit_stall(stalled)
        held = self._held()
        limit = self._window.buffer.max_records
        # Read on whenever there is room: records parked for a slow budget must not stop the
        # reading of others. Paused partitions (the rare case) resume only at half (hysteresis).
        if self._window.buffer.room() > 0 and (
            held <= limit // 2 or (held < limit and not self._paused)
        ):
            self._resume()
            await self._fetch((), self._timings.poll_seconds, limit - held)
            return
        urgent = self._urgent_partitions()
        if urgent:  # fetched on every turn: an urgent record never waits behind the bulk buffer
            await self._fetch(urgent, self._timings.poll_seconds, self._window.capacity)
            return
        await self._window.wait_for_change(self._timings.poll_seconds)
        if self._clock() - self._last_fetch >= self._timings.keepalive_seconds:
            room = max(limit - held, 0) if self._window.buffer.room() > 0 else 0
            if room == 0:
                self._pause()
            await self._fetch((), 0, max(room, 1))

    def _held(self) -> int:
        """Records read but not yet being worked on: buffered, or parked for a budget beyond the
        parking allowance."""
        return len(self._window.buffer) + self._window.parked_over_allowance

    def _urgent_partitions(self) -> list[TopicPartition]:
        topic = self._urgent_topic
        return [p for p in self._source.assignment() if p.topic == topic] if topic else []

    async def _fetch(self, partitions: Collection[TopicPartition], wait: float, n: int) -> None:
        records = await self._source.fetch(partitions, wait, n)
        self._last_fetch = self._clock()
        self._window.offer(records)

    def _pause(self) -> None:
        bulk = {p for p in self._source.assignment() if p.topic != self._urgent_topic}
        to_pause = bulk - self._paused
        if to_pause:
            self._source.pause(to_pause)
            self._paused |= to_pause
            log.info("buffer full: partitions paused", extra={"partitions": len(to_pause)})

    def _resume(self) -> None:
        if self._paused:
            self._source.resume(self._paused & self._source.assignment())
            log.info("partitions resumed", extra={"partitions": len(self._paused)})
            self._paused.clear()

    async def _measure(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._lag.update()

    async def _drain(self) -> None:
        """Two phases: wait for in-flight records within the budget, cancel the rest, commit."""
        tasks = self._window.close()
        if tasks:
            log.info(
                "draining",
                extra={"inflight": len(tasks), "budget_seconds": self._timings.drain_seconds},
            )
        await settle(tasks, self._timings.drain_seconds, self._timings.cancel_seconds)
        await self._committer.commit()


class IdleStop:
    """Sets `stop` once everything assigned has been read, finished and committed for a while."""

    def __init__(
        self, source: Source, window: Window, committer: Committer, joined: asyncio.Event
    ) -> None:
        self._source = source
        self._window = window
        self._committer = committer
        self._joined = joined

    async def run(self, stop: asyncio.Event, seconds: float) -> None:
        idle_since: float | None = None
        while not stop.is_set():
            await asyncio.sleep(0.25)
            now = time.monotonic()
            caught_up = await self._caught_up()
            idle_since = (idle_since or now) if caught_up else None
            if idle_since is not None and now - idle_since >= seconds:
                log.info("caught up; stopping")
                stop.set()

    async def _caught_up(self) -> bool:
        assignment = self._source.assignment()
        if not self._joined.is_set() or len(self._window) or len(self._window.buffer):
            return False
        if not assignment or not await self._committer.commit():
            return False
        ends = await self._source.end_offsets(assignment)
        try:
            for partition, end in ends.items():
                if await self._source.position(partition) < end:
                    return False
        except Exception:  # a partition moved away meanwhile: not caught up yet
            return False
        return True
