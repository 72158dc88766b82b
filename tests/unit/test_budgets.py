"""budgets.py: one limiter per budget at this replica's share; a share that grows waits a second.

Two replicas' `Budgets` run on one virtual clock, the way two processes share Cognito's: whatever
the rebalance, their grants together never put more than the budget into any one-second window.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.test_ratelimit import START, FakeTimer, busiest_window
from worker.budgets import Budgets
from worker.metrics import Metrics
from worker.ratelimit import RateLimiter
from worker.routing import BudgetKey

KEY = BudgetKey("default", "us-east-1")
BUDGET = 20.0


class Replica:
    """One replica's budgets and a backlog that always waits for the next grant."""

    def __init__(self, timer: FakeTimer) -> None:
        self.budgets = Budgets(lambda key: BUDGET, Metrics(), timer=timer)
        self.timer = timer
        self.grants: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []

    def drain(self, tasks: int = 4) -> None:
        limiter = self.budgets.limiter(KEY)
        self._tasks += [asyncio.create_task(self._take(limiter)) for _ in range(tasks)]

    async def _take(self, limiter: RateLimiter) -> None:
        while True:
            await limiter.acquire()
            self.grants.append(self.timer.now)
            limiter.on_success()  # the call completed (opens the start-up gate)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_joining_replica_and_a_shrinking_one_stay_within_the_budget_together() -> None:
    timer = FakeTimer()
    first, second = Replica(timer), Replica(timer)
    first.budgets.set_share(6, 6)  # a cold start alone: its whole share after a second
    first.drain()
    await timer.run_for(5.0)
    assert first.grants[0] == pytest.approx(START + 1.0)
    first.budgets.set_share(3, 6)  # the second replica joins: the first gives half away at once
    second.budgets.set_share(3, 6)
    second.drain()
    await timer.run_for(5.0)
    assert min(second.grants) >= START + 6.0  # the first's last second has passed
    assert busiest_window(first.grants + second.grants) <= BUDGET
    late = [t for t in first.grants + second.grants if t >= START + 8.0]
    assert len(late) >= 2 * BUDGET - 1  # and the budget is used in full again
    await first.stop()
    await second.stop()


async def test_a_replica_left_alone_takes_the_whole_budget_only_after_a_second() -> None:
    timer = FakeTimer()
    first, second = Replica(timer), Replica(timer)
    for replica in (first, second):
        replica.budgets.set_share(3, 6)
        replica.drain()
    await timer.run_for(5.0)
    await second.stop()  # the second leaves at START + 5
    first.budgets.set_share(6, 6)
    await timer.run_for(5.0)
    assert busiest_window(first.grants + second.grants) <= BUDGET
    assert first.budgets.limiter(KEY).ceiling == BUDGET
    assert len([t for t in first.grants if t >= START + 8.0]) >= 2 * BUDGET - 1
    await first.stop()


async def test_a_shrink_before_a_pending_raise_cancels_it() -> None:
    timer = FakeTimer()
    replica = Replica(timer)
    replica.budgets.set_share(3, 6)
    replica.drain()
    await timer.run_for(3.0)
    replica.budgets.set_share(6, 6)  # would be the whole budget a second from now...
    await timer.run_for(0.5)
    replica.budgets.set_share(2, 6)  # ...but a third replica joined meanwhile
    await timer.run_for(3.0)
    limiter = replica.budgets.limiter(KEY)
    assert limiter.ceiling == pytest.approx(BUDGET / 3)
    assert busiest_window([t for t in replica.grants if t >= START + 4.5]) <= 7
    await replica.stop()
