"""The rebalance listener: revoked partitions settled with deadlines, committed once, forgotten."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from tests.unit.fake_kafka import FakeSource, record
from worker.buffer import RecordBuffer
from worker.committer import Committer
from worker.lag import LagMeter
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.rebalance import RebalanceListener
from worker.records import Record
from worker.window import Window

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


class Rig:
    def __init__(self, *, revoke_wait: float = 0.05, cancel_wait: float = 0.05) -> None:
        self.source = FakeSource(partitions=2)
        self.release: dict[tuple[int, int], asyncio.Event] = {}
        self.stubborn: set[tuple[int, int]] = set()
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        buffer: RecordBuffer[TopicPartition] = RecordBuffer(100, 1 << 20)
        self.window = Window(4, self.run, self.tracker, buffer)
        self.committer = Committer(self.source, self.tracker, min_gap=0.01)
        self.assignments: list[tuple[int, int]] = []
        self.joined = 0
        self.listener = RebalanceListener(
            self.source,
            self.window,
            self.committer,
            LagMeter(self.source, self.tracker, Metrics()),
            topics=["t"],
            revoke_wait=revoke_wait,
            cancel_wait=cancel_wait,
            on_assignment=lambda mine, total: self.assignments.append((mine, total)),
            on_joined=self.on_joined,
        )

    def on_joined(self) -> None:
        self.joined += 1

    async def run(self, rec: Record) -> object:
        key = (rec.partition, rec.offset)
        event = self.release.setdefault(key, asyncio.Event())
        while True:
            try:
                await event.wait()
                return key
            except asyncio.CancelledError:
                if key not in self.stubborn:
                    raise
                self.stubborn.discard(key)  # ignores one cancellation, then goes on waiting

    def finish(self, partition: int, offset: int) -> None:
        self.release.setdefault((partition, offset), asyncio.Event()).set()


async def turn() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_revoked_partitions_records_are_never_committed_after_revocation() -> None:
    rig = Rig()
    rig.window.offer([record(0, 0), record(0, 1), record(1, 0)])
    await turn()
    rig.finish(0, 1)  # offset 0 of P0 still runs: the commit may not pass it
    await turn()
    await rig.listener.on_partitions_revoked([P0])
    assert [c[P0] for c in rig.source.commits if P0 in c] == [0]  # not past the unfinished 0
    before = list(rig.source.commits)
    rig.finish(0, 0)  # finishes after the hand-over: too late to count
    await turn()
    await rig.committer.commit()
    later = rig.source.commits[len(before) :]
    assert all(P0 not in commit for commit in later)  # P0 is never committed again here
    rig.finish(1, 0)
    await turn()
    await rig.committer.commit()
    assert rig.source.commits[-1] == {P1: 1}


async def test_what_finishes_within_the_revoke_wait_is_committed_on_revocation() -> None:
    rig = Rig(revoke_wait=5.0)
    rig.window.offer([record(0, 0), record(0, 1)])
    await turn()

    async def finish_soon() -> None:
        await asyncio.sleep(0.02)
        rig.finish(0, 0)
        rig.finish(0, 1)

    helper = asyncio.create_task(finish_soon())
    await rig.listener.on_partitions_revoked([P0])
    await helper
    assert rig.source.commits == [{P0: 2}]


async def test_revocation_returns_by_its_deadlines_even_when_a_record_ignores_cancellation() -> (
    None
):
    rig = Rig(revoke_wait=0.05, cancel_wait=0.05)
    rig.stubborn.add((0, 0))
    rig.window.offer([record(0, 0), record(0, 1)])
    await turn()
    async with asyncio.timeout(2):  # a wait without a deadline would hang here
        await rig.listener.on_partitions_revoked([P0])
    assert all(c.get(P0, 0) == 0 for c in rig.source.commits)
    for task in rig.window.tasks():
        task.cancel()
    await asyncio.gather(*rig.window.tasks(), return_exceptions=True)


async def test_revocation_drops_the_partitions_buffered_records() -> None:
    rig = Rig()
    rig.window.offer([record(0, o) for o in range(10)] + [record(1, 0)])
    await turn()
    assert len(rig.window.buffer) == 7
    await rig.listener.on_partitions_revoked([P0])
    assert rig.window.buffer.partitions() == []  # P1's only record was already started
    for task in rig.window.tasks():
        task.cancel()
    await asyncio.gather(*rig.window.tasks(), return_exceptions=True)


async def test_assignment_reports_the_share_and_joins() -> None:
    rig = Rig()
    rig.source.assigned = {P1}
    await rig.listener.on_partitions_assigned([P1])
    assert rig.assignments == [(1, 2)]
    assert rig.joined == 1
