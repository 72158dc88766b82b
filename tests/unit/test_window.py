"""The window: at most `capacity` records at once, fed from the buffer, settled with deadlines."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from tests.unit.fake_kafka import record
from worker.buffer import RecordBuffer, record_size
from worker.offsets import OffsetTracker
from worker.records import Lane, Record
from worker.window import Parking, Window, settle

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


class Gate:
    """Runs records until released; remembers what ran."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.release: dict[tuple[int, int], asyncio.Event] = {}

    async def run(self, rec: Record) -> object:
        key = (rec.partition, rec.offset)
        self.started.append(key)
        await self.release.setdefault(key, asyncio.Event()).wait()
        return key

    def finish(self, partition: int, offset: int) -> None:
        self.release.setdefault((partition, offset), asyncio.Event()).set()


def make_window(gate: Gate, capacity: int = 2) -> tuple[Window, OffsetTracker[TopicPartition]]:
    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    buffer: RecordBuffer[TopicPartition] = RecordBuffer(100, 1 << 20)
    return Window(capacity, gate.run, tracker, buffer), tracker


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_starts_at_most_capacity_and_the_next_as_soon_as_one_finishes() -> None:
    gate = Gate()
    window, tracker = make_window(gate)
    window.offer([record(0, o) for o in range(4)])
    await settle_loop()
    assert gate.started == [(0, 0), (0, 1)]
    assert len(window.buffer) == 2
    gate.finish(0, 1)
    await settle_loop()
    assert gate.started == [(0, 0), (0, 1), (0, 2)]
    assert tracker.safe_offset(P0) == 0  # offset 0 still runs: nothing past it is safe
    await settle(window.close(), 0, 1)


async def test_partitions_take_turns_from_the_buffer() -> None:
    gate = Gate()
    window, _ = make_window(gate, capacity=4)
    window.offer([record(0, o) for o in range(3)] + [record(1, o) for o in range(3)])
    await settle_loop()
    assert sorted(gate.started) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    await settle(window.close(), 0, 1)


async def test_settle_cancels_after_the_wait_and_gives_up_on_a_task_that_ignores_it() -> None:
    stubborn_started = asyncio.Event()

    async def stubborn() -> None:
        stubborn_started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(10)  # ignores the first cancellation: settle must still return

    async def polite() -> None:
        await asyncio.sleep(10)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(polite())]
    await stubborn_started.wait()
    left = await asyncio.wait_for(settle(tasks, wait=0.05, cancel_wait=0.05), timeout=5)
    assert left == 1
    assert tasks[1].cancelled()
    tasks[0].cancel()  # a second cancellation ends it
    await asyncio.wait(tasks)


async def test_a_cancelled_record_is_never_marked_done() -> None:
    gate = Gate()
    window, tracker = make_window(gate)
    window.offer([record(0, 0), record(0, 1)])
    await settle_loop()
    gate.finish(0, 1)
    await settle_loop()
    left = await settle(window.close(), wait=0.01, cancel_wait=1.0)
    assert left == 0
    assert tracker.safe_offset(P0) == 0  # offset 0 was cancelled: redelivered, not committed


async def test_revoke_drops_buffered_records_and_late_finishers_do_not_count() -> None:
    gate = Gate()
    window, tracker = make_window(gate, capacity=1)
    window.offer([record(0, 0), record(0, 1), record(1, 0)])
    await settle_loop()
    tasks = window.revoke([P0])
    assert len(window.buffer) == 1  # P0's buffered offset 1 dropped, P1's kept
    window.forget([P0])
    tracker.forget(P0)
    tracker.start(P0, 0)  # the partition comes back and offset 0 starts anew
    gate.finish(0, 0)  # the old task of the earlier assignment finishes late
    await asyncio.wait(tasks)
    await settle_loop()
    assert tracker.pending(P0) == 1  # the new attempt at offset 0 is not marked done by the old one
    await settle(window.close(), 0, 1)


async def test_a_record_finishing_during_the_hand_over_is_still_marked_done() -> None:
    gate = Gate()
    window, tracker = make_window(gate, capacity=2)
    window.offer([record(0, 0), record(0, 1)])
    await settle_loop()
    tasks = window.revoke([P0])
    gate.finish(0, 0)
    gate.finish(0, 1)
    assert await settle(tasks, wait=5, cancel_wait=1) == 0
    assert tracker.safe_offset(P0) == 2  # both finished before the commit: both committable


async def test_closing_starts_nothing_more() -> None:
    gate = Gate()
    window, _ = make_window(gate, capacity=1)
    window.offer([record(0, 0), record(0, 1)])
    await settle_loop()
    tasks = window.close()
    gate.finish(0, 0)
    await asyncio.wait(tasks)
    await settle_loop()
    assert gate.started == [(0, 0)]


@pytest.mark.parametrize("capacity", [1, 3])
async def test_the_window_never_holds_more_than_its_capacity(capacity: int) -> None:
    gate = Gate()
    sizes: list[int] = []
    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    buffer: RecordBuffer[TopicPartition] = RecordBuffer(100, 1 << 20)
    window = Window(capacity, gate.run, tracker, buffer, on_size=sizes.append)
    window.offer([record(0, o) for o in range(10)])
    for offset in range(10):
        await settle_loop()
        gate.finish(0, offset)
    await asyncio.wait_for(asyncio.gather(*window.tasks()), timeout=5)
    assert max(sizes) == capacity
    assert tracker.safe_offset(P0) == 10


async def test_revoke_cancels_records_parked_for_a_budget_and_leaves_calls_in_flight() -> None:
    budget = asyncio.Event()  # never set: the budget has no slot for parked records
    started: list[int] = []
    window: Window

    async def run(rec: Record) -> object:
        started.append(rec.offset)
        if rec.offset == 0:
            await asyncio.sleep(0.05)  # a call in flight, not parked
            return rec.offset
        with window.parked():
            await budget.wait()
        return rec.offset

    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    window = Window(2, run, tracker, RecordBuffer(100, 1 << 20))
    window.offer([record(0, o) for o in range(3)])
    await settle_loop()
    assert started == [0, 1, 2]  # the parked records gave their slots on
    assert window.parked_count == 2
    tasks = window.revoke([P0])
    await settle_loop()
    assert [(t.done(), t.cancelled()) for t in tasks] == [
        (False, False),
        (True, True),
        (True, True),
    ]
    assert await settle(tasks, 1.0, 1.0) == 0
    assert tracker.safe_offset(P0) == 1  # the call in flight finished; the parked are redelivered


async def test_parked_records_count_as_buffered_only_beyond_the_parking_allowance() -> None:
    budget = asyncio.Event()
    window: Window

    async def run(rec: Record) -> object:
        with window.parked():
            await budget.wait()
        return rec.offset

    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    size = record_size(record(0, 0))
    window = Window(2, run, tracker, RecordBuffer(100, 1 << 20), parking=Parking(3, 10 * size))
    window.offer([record(0, o) for o in range(5)])
    await settle_loop()
    assert window.parked_count == 5
    assert window.parked_over_allowance == 2  # the first three are the allowance's
    budget.set()
    assert await settle(window.close(), 1.0, 1.0) == 0
    assert window.parked_count == 0
    assert window.parked_over_allowance == 0

    window = Window(2, run, tracker, RecordBuffer(100, 1 << 20), parking=Parking(100, 2 * size))
    big = window
    budget.clear()
    big.offer([record(1, o) for o in range(3)])
    await settle_loop()
    assert big.parked_over_allowance == 3  # its bytes are spent: every parked record counts
    await settle(big.close(), 1.0, 1.0)


async def test_close_cancels_parked_records_at_once_and_waits_for_calls_in_flight() -> None:
    finish = asyncio.Event()
    window: Window

    async def run(rec: Record) -> object:
        if rec.offset == 0:
            await finish.wait()  # a call in flight
            return rec.offset
        with window.parked():
            await asyncio.Event().wait()  # a budget that never frees a slot
        return rec.offset

    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    window = Window(2, run, tracker, RecordBuffer(100, 1 << 20))
    window.offer([record(0, o) for o in range(4)])
    await settle_loop()
    tasks = window.close()
    await settle_loop()
    assert [t.cancelled() for t in tasks] == [False, True, True, True]
    asyncio.get_running_loop().call_later(0.05, finish.set)
    assert await settle(tasks, 5.0, 1.0) == 0
    assert tracker.safe_offset(P0) == 1  # the parked records were never marked done


class Budgets:
    """Budgets named by the record's value; a record waits for its budget's next grant."""

    def __init__(self) -> None:
        self.grants: dict[bytes, asyncio.Queue[None]] = {}
        self.started: list[tuple[bytes, int]] = []
        self.signed: list[tuple[bytes, int]] = []

    def grant(self, budget: bytes, count: int = 1) -> None:
        for _ in range(count):
            self.grants.setdefault(budget, asyncio.Queue()).put_nowait(None)

    def window(self, capacity: int, tracker: OffsetTracker[TopicPartition], **kw: object) -> Window:
        window: Window

        async def run(rec: Record) -> object:
            budget = rec.value or b""
            self.started.append((budget, rec.offset))
            with window.parked(budget):
                await self.grants.setdefault(budget, asyncio.Queue()).get()
            self.signed.append((budget, rec.offset))
            return rec.offset

        window = Window(
            capacity,
            run,
            tracker,
            RecordBuffer(1000, 1 << 20),
            budget_of=lambda rec: rec.value,
            **kw,  # type: ignore[arg-type]
        )
        return window


async def test_records_beyond_a_budgets_parked_tasks_wait_as_records_and_start_in_order() -> None:
    budgets = Budgets()
    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    window = budgets.window(4, tracker, defer_after=3, parking=Parking(100, 1 << 20))
    eu = [record(0, o, value=b"eu") for o in range(10)]
    us = [record(0, o, value=b"us") for o in range(10, 12)]
    window.offer(eu + us)
    await settle_loop()
    # A few tasks wait for eu (three, plus those started before the third had parked); the other
    # eu records are kept as records, and the us records behind them are reached.
    eu_tasks = [o for b, o in budgets.started if b == b"eu"]
    assert eu_tasks == list(range(len(eu_tasks)))
    assert 3 <= len(eu_tasks) < 3 + window.capacity
    assert [o for b, o in budgets.started if b == b"us"] == [10, 11]
    assert window.deferred_count == 10 - len(eu_tasks)
    assert window.parked_count == 12
    budgets.grant(b"us", 2)
    await settle_loop()
    assert budgets.signed == [(b"us", 10), (b"us", 11)]
    assert tracker.safe_offset(P0) == 0  # nothing committed past the waiting eu records
    budgets.grant(b"eu", 10)
    for _ in range(10):
        await settle_loop()
    assert [o for b, o in budgets.signed if b == b"eu"] == list(range(10))  # in order, each once
    assert window.deferred_count == 0
    assert tracker.safe_offset(P0) == 12
    assert await settle(window.close(), 1.0, 1.0) == 0


async def test_urgent_records_are_never_deferred_and_revoke_drops_deferred_records() -> None:
    budgets = Budgets()
    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    urgent = TopicPartition("u", 0)
    window = budgets.window(
        4,
        tracker,
        defer_after=1,
        lane_of=lambda p: Lane.URGENT if p == urgent else Lane.BULK,
        urgent_reserve=1,
    )
    window.offer([record(0, o, value=b"eu") for o in range(5)])
    window.offer([record(0, o, topic="u", value=b"eu") for o in range(2)])
    await settle_loop()
    assert window.deferred_count > 0
    urgent_started = [o for o in range(2) if (b"eu", o) in budgets.started]
    assert urgent_started == [0, 1]  # both urgent records run, however many eu tasks wait
    tasks = window.revoke([P0])
    assert window.deferred_count == 0
    await settle(tasks, 1.0, 1.0)
    assert window.parked_count == 2  # the urgent partition's records still wait
    budgets.grant(b"eu", 2)
    await settle_loop()
    assert sorted(budgets.signed) == [(b"eu", 0), (b"eu", 1)]
    assert await settle(window.close(), 1.0, 1.0) == 0


async def test_a_budget_granted_at_once_does_not_give_the_slot_away() -> None:
    """Parking frees a slot only for a real wait: a record whose grant comes without a wait must
    not start another one, or the window runs past its capacity (every call starting the next)."""
    running: list[int] = []
    peak = 0
    release = asyncio.Event()

    async def run(rec: Record) -> object:
        nonlocal peak
        running.append(rec.offset)
        with window.parked():
            pass  # the budget had a call free: no wait
        peak = max(peak, window.active)
        await release.wait()
        running.remove(rec.offset)
        return rec.offset

    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    window = Window(4, run, tracker, RecordBuffer(100, 1 << 20))
    window.offer([record(0, o) for o in range(40)])
    await settle_loop()
    assert len(running) == 4
    assert peak <= 4
    release.set()
    await settle_loop()
    await settle(window.close(), 0, 1)


async def test_a_wait_within_the_park_grace_keeps_the_slot_and_a_longer_one_gives_it() -> None:
    """A budget spacing its calls by less than the grace is not holding records back: giving the
    slot away then would only start more records to wait behind it."""
    started: list[int] = []
    waits = {0: 0.005, 1: 0.2}  # seconds each record waits for its budget

    async def run(rec: Record) -> object:
        started.append(rec.offset)
        with window.parked():
            await asyncio.sleep(waits.get(rec.offset, 0.0))
        await asyncio.Event().wait()  # its call: never ends here
        return rec.offset

    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    window = Window(1, run, tracker, RecordBuffer(100, 1 << 20), park_grace=0.05)
    window.offer([record(0, o) for o in range(4)])
    await asyncio.sleep(0.1)
    assert started == [0]  # granted within the grace: the only slot stayed with it
    await settle(window.close(), 0, 1)

    started.clear()
    window = Window(1, run, tracker, RecordBuffer(100, 1 << 20), park_grace=0.05)
    window.offer([record(0, o) for o in range(1, 3)])
    await asyncio.sleep(0.02)
    assert started == [1]  # still within the grace
    await asyncio.sleep(0.08)
    assert started == [1, 2]  # past it: the slot went to the next record
    await settle(window.close(), 0, 1)
