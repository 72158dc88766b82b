"""The consume loop against an in-memory source: the buffer's bounds, keep-alive, urgent lane."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from tests.unit.fake_kafka import FakeSource
from worker.buffer import RecordBuffer
from worker.committer import Committer
from worker.consumer import ConsumerLoop, LoopTimings
from worker.health import Health
from worker.lag import LagMeter
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.records import Lane, Record
from worker.window import Parking, Window, settle

URGENT = "urgent"
NO_PARKING = Parking()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Held:
    """Records that never finish until released; some of them park as if waiting for a budget."""

    def __init__(self) -> None:
        self.started: list[Record] = []
        self.release = asyncio.Event()

    async def run(self, record: Record) -> object:
        self.started.append(record)
        await self.release.wait()
        return None


def rig(
    source: FakeSource,
    held: Held,
    *,
    capacity: int = 2,
    max_records: int = 10,
    parking: Parking = NO_PARKING,
) -> tuple[ConsumerLoop, Window, Clock]:
    clock = Clock()
    tracker: OffsetTracker[TopicPartition] = OffsetTracker()

    def lane_of(partition: TopicPartition) -> Lane:
        return Lane.URGENT if partition.topic == URGENT else Lane.BULK

    buffer: RecordBuffer[TopicPartition] = RecordBuffer(max_records, 1 << 20, lane_of)
    window = Window(
        capacity, held.run, tracker, buffer, lane_of=lane_of, urgent_reserve=1, parking=parking
    )
    committer = Committer(source, tracker, min_gap=0.01)
    loop = ConsumerLoop(
        source,
        window,
        committer,
        LagMeter(source, tracker, Metrics()),
        Health(clock),
        LoopTimings(poll_seconds=0.001, keepalive_seconds=10.0),
        urgent_topic=URGENT,
        clock=clock,
    )
    return loop, window, clock


async def polls(loop: ConsumerLoop, count: int) -> None:
    for _ in range(count):
        await loop._poll_once()
        for _ in range(3):  # let started records run up to their wait
            await asyncio.sleep(0)


async def test_the_buffer_never_holds_more_than_its_bound_and_each_record_is_read_once() -> None:
    source = FakeSource(partitions=3)
    for partition in range(3):
        source.produce(partition, 400)
    held = Held()
    loop, window, _ = rig(source, held)
    for _ in range(50):
        await polls(loop, 1)
        assert len(window.buffer) + window.parked_count <= window.buffer.max_records
    read = sum(source.positions.values())
    assert read == len(window.buffer) + len(held.started)  # nothing read was dropped
    assert source.paused == set()  # a full buffer alone does not pause anything
    held.release.set()
    await settle(window.close(), 1, 1)


async def test_a_buffer_full_for_the_keepalive_pauses_and_half_empty_resumes() -> None:
    source = FakeSource(partitions=2)
    source.produce(0, 100)
    source.produce(1, 100)
    held = Held()
    loop, window, clock = rig(source, held)
    await polls(loop, 3)
    assert window.buffer.room() == 0  # read ahead up to the bound, nothing paused
    assert source.paused == set()
    fetches = source.fetches
    clock.now += 11  # full for a whole keep-alive: pause, and still poll
    await polls(loop, 1)
    assert source.paused == set(source.partitions)
    assert source.fetches == fetches + 1  # the group still sees a poll
    window.buffer.drop(source.partitions)  # room again
    await polls(loop, 1)
    assert source.paused == set()
    held.release.set()
    await settle(window.close(), 1, 1)


async def test_urgent_records_are_read_and_started_however_full_the_bulk_buffer() -> None:
    source = FakeSource(partitions=2)
    urgent = FakeSource(partitions=1, topic=URGENT)
    source.partitions += urgent.partitions
    source.assigned |= set(urgent.partitions)
    source.logs.update(urgent.logs)
    source.positions.update(urgent.positions)
    source.produce(0, 200)
    held = Held()
    loop, window, _ = rig(source, held, capacity=3)
    await polls(loop, 5)
    assert [r.topic for r in held.started] == ["t", "t"]  # bulk never takes the reserved slot
    source.produce(2, 1)  # an urgent request arrives behind a full bulk buffer
    await polls(loop, 2)
    assert held.started[-1].topic == URGENT
    held.release.set()
    await settle(window.close(), 1, 1)


async def test_the_loop_reads_past_parked_records_up_to_the_parking_allowance() -> None:
    source = FakeSource(partitions=2)
    source.produce(0, 300)
    source.produce(1, 300)
    window: Window

    async def park(record: Record) -> object:
        with window.parked():
            await asyncio.Event().wait()  # a budget with no slot for them
        return None

    loop, window, _ = rig(source, Held(), parking=Parking(records=100, bytes=1 << 20))
    window._run = park
    bound = 100 + window.buffer.max_records + window.capacity  # + records starting, not parked
    for _ in range(100):
        await polls(loop, 1)
        assert sum(source.positions.values()) <= bound
    # A backlog parked on one budget is read past, as far as the allowance and the buffer go.
    assert sum(source.positions.values()) >= 100 + window.buffer.max_records
    assert window.parked_count > 100
    await settle(window.close(), 1, 1)
