"""The committer: explicit offsets, never past an unfinished record, soon after a finish."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from tests.unit.fake_kafka import FakeSource
from worker.committer import Committer
from worker.offsets import OffsetTracker

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def committer_for(
    source: FakeSource, clock: Clock | None = None
) -> tuple[Committer, OffsetTracker[TopicPartition]]:
    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    committer = Committer(source, tracker, min_gap=0.01, clock=clock or Clock())
    return committer, tracker


async def test_commits_every_finished_prefix_and_nothing_past_an_unfinished_record() -> None:
    source = FakeSource()
    committer, tracker = committer_for(source)
    for offset in range(5):
        tracker.start(P0, offset)
    for offset in (0, 1, 2, 4):  # 3 is still running
        tracker.done(P0, offset)
    assert await committer.commit()
    assert source.commits == [{P0: 3}]
    tracker.done(P0, 3)
    assert await committer.commit()
    assert source.commits[-1] == {P0: 5}  # the finished 4 was not skipped


async def test_a_failed_commit_is_retried_with_the_same_offsets() -> None:
    source = FakeSource()
    committer, tracker = committer_for(source)
    tracker.start(P1, 7)
    tracker.done(P1, 7)
    source.fail_commits = 1
    assert not await committer.commit()
    assert source.commits == []
    assert await committer.commit()
    assert source.commits == [{P1: 8}]


async def test_only_the_chosen_partitions_are_committed_on_revocation() -> None:
    source = FakeSource()
    committer, tracker = committer_for(source)
    for partition in (P0, P1):
        tracker.start(partition, 0)
        tracker.done(partition, 0)
    assert await committer.commit([P0])
    assert source.commits == [{P0: 1}]


async def test_a_finished_record_is_committed_soon_without_waiting_for_a_second() -> None:
    source = FakeSource()
    committer, tracker = committer_for(source)
    runner = asyncio.create_task(committer.run())
    try:
        await asyncio.sleep(0.05)  # the first, empty round
        tracker.start(P0, 0)
        tracker.done(P0, 0)
        committer.finished(P0)
        async with asyncio.timeout(0.5):  # well under the one-second idle round
            await source.committed_event.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert source.commits == [{P0: 1}]


async def test_a_stuck_commit_point_is_measured_only_while_records_wait() -> None:
    clock = Clock()
    committer, tracker = committer_for(FakeSource(), clock)
    tracker.start(P0, 0)
    tracker.start(P0, 1)
    assert committer.stalled_for() == 0.0
    clock.now += 30
    tracker.done(P0, 1)  # a later record finishes; offset 0 still holds the commit point
    assert committer.stalled_for() == 30.0
    tracker.done(P0, 0)
    assert committer.stalled_for() == 0.0
    clock.now += 500
    assert committer.stalled_for() == 0.0  # nothing waits: idle is not stuck


async def test_forgotten_partitions_are_not_committed_again() -> None:
    source = FakeSource()
    committer, tracker = committer_for(source)
    tracker.start(P0, 0)
    committer.forget([P0])
    tracker.done(P0, 0)  # a late finisher of a revoked partition
    assert await committer.commit()
    assert source.commits == []
