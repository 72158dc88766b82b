"""ratelimit.py: schedule, lanes, start-up gate and AIMD on a fake timer whose alarms fire late.

Time is virtual: `FakeTimer` fires the limiter's alarms in order, each late by `lateness()`, and
lets the waiting tasks run after each one. Nothing here waits for real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.ratelimit import (
    CAUTIOUS_SLOWDOWN,
    MIN_RATE,
    RateLimiter,
    partition_share,
    request_written,
)

START = 1_000.0
EPSILON = 1e-9  # float sums of intervals: a window's end is taken this much early


@dataclass(order=True)
class _Alarm:
    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


async def settle() -> None:
    """Let every task that was woken run until it waits again."""
    for _ in range(8):
        await asyncio.sleep(0)


class FakeTimer:
    """A `Timer` on virtual time; each alarm fires `lateness()` seconds after its time."""

    def __init__(self, lateness: Callable[[], float] = lambda: 0.0) -> None:
        self.now = START
        self._lateness = lateness
        self._alarms: list[_Alarm] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(when, next(self._seq), callback)
        heapq.heappush(self._alarms, alarm)
        return alarm

    def pending(self) -> list[float]:
        return sorted(a.when for a in self._alarms if not a.cancelled)

    def fire_next(self, until: float = math.inf) -> bool:
        """Fire the next alarm due by `until`, without letting tasks run; False when none."""
        while self._alarms and self._alarms[0].when <= until:
            alarm = heapq.heappop(self._alarms)
            if not alarm.cancelled:
                self.now = max(self.now, alarm.when + self._lateness())
                alarm.callback()
                return True
        return False

    async def run_until(self, until: float) -> None:
        await settle()
        while self.fire_next(until):
            await settle()
        self.now = max(self.now, until)
        await settle()

    async def run_for(self, seconds: float) -> None:
        await self.run_until(self.now + seconds)


def _limiter(
    rate: float,
    *,
    burst: float = 1.0,
    decrease_factor: float = 0.75,
    decrease_interval: float = 1.0,
    increase_fraction: float = 0.05,
    warmup_timeout: float = 0.0,
    timer: FakeTimer | None = None,
) -> tuple[RateLimiter, FakeTimer]:
    timer = timer or FakeTimer()
    limiter = RateLimiter(
        rate,
        burst=burst,
        decrease_factor=decrease_factor,
        quiet_decrease_factor=decrease_factor,
        decrease_interval=decrease_interval,
        increase_fraction=increase_fraction,
        warmup_timeout=warmup_timeout,
        timer=timer,
    )
    return limiter, timer


class Load:
    """Tasks taking grants in a row, each grant recorded as (label, virtual time)."""

    def __init__(self, limiter: RateLimiter, timer: FakeTimer, *, try_first: bool = False) -> None:
        self._limiter = limiter
        self._timer = timer
        self._try_first = try_first  # as the handler does: `try_acquire`, then `acquire`
        self.grants: list[tuple[str, float]] = []
        self.waited: list[float] = []
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, label: str, times: int = 1, *, urgent: bool = False) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(label, times, urgent))
        self.tasks.append(task)
        return task

    async def _run(self, label: str, times: int, urgent: bool) -> None:
        for _ in range(times):
            if self._try_first and self._limiter.try_acquire(urgent):
                self.waited.append(0.0)
            else:
                self.waited.append(await self._limiter.acquire(urgent))
            self.grants.append((label, self._timer.now))

    def times(self) -> list[float]:
        return [t for _, t in self.grants]

    def order(self) -> list[str]:
        return [label for label, _ in self.grants]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def busiest_window(times: list[float]) -> int:
    """The most grants in any half-open one-second window [t, t + 1)."""
    ordered = sorted(times)
    best, end = 0, 0
    for start, t in enumerate(ordered):
        while end < len(ordered) and ordered[end] < t + 1.0 - EPSILON:
            end += 1
        best = max(best, end - start)
    return best


# -- the schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "n"), [(4.0, 9), (20.0, 41), (3.0, 7), (0.5, 3)])
async def test_n_acquisitions_in_a_row_take_n_minus_one_intervals(rate: float, n: int) -> None:
    limiter, timer = _limiter(rate)
    load = Load(limiter, timer)
    load.start("a", n)
    await timer.run_for(100.0)
    assert len(load.grants) == n
    assert load.times()[-1] - START == pytest.approx((n - 1) / rate)
    assert sum(load.waited) == pytest.approx((n - 1) / rate)


async def test_the_first_acquisition_does_not_wait() -> None:
    limiter, timer = _limiter(5.0)
    assert await limiter.acquire() == 0.0
    assert timer.pending() == []


async def test_idle_time_is_not_owed_whatever_the_burst() -> None:
    limiter, timer = _limiter(2.0, burst=3.0)
    load = Load(limiter, timer)
    load.start("a", 3)
    await timer.run_for(100.0)  # a long idle
    start = timer.now
    load.start("b", 5)
    await timer.run_for(100.0)
    assert [t - start for t in load.times()[3:]] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])


async def test_a_late_wake_up_is_made_up_by_the_next_slot() -> None:
    lateness = iter([0.03] + [0.0] * 100)
    limiter, timer = _limiter(20.0, timer=FakeTimer(lambda: next(lateness)))
    load = Load(limiter, timer)
    load.start("a", 4)
    await timer.run_for(1.0)
    # The second slot (0.05) fires 0.03 late; the third keeps its place at 0.10.
    assert [t - START for t in load.times()] == pytest.approx([0.0, 0.08, 0.10, 0.15])


async def test_lateness_beyond_one_interval_is_made_up_by_one_interval_only() -> None:
    lateness = iter([0.12] + [0.0] * 100)
    limiter, timer = _limiter(20.0, timer=FakeTimer(lambda: next(lateness)))
    load = Load(limiter, timer)
    load.start("a", 5)
    await timer.run_for(1.0)
    # Two grants at once make up one interval; the rest of the lateness is lost, not bunched.
    assert [t - START for t in load.times()] == pytest.approx([0.0, 0.17, 0.17, 0.22, 0.27])


async def test_at_thousands_a_second_a_late_wake_up_is_made_up_at_once() -> None:
    """One interval of tolerance is far less than a busy loop's wake-up: the floor lets the
    schedule catch up, so the rate is not capped at two grants per wake-up."""
    lateness = iter([0.008] + [0.0] * 100)
    limiter, timer = _limiter(1_000.0, timer=FakeTimer(lambda: next(lateness)))
    load = Load(limiter, timer)
    for i in range(20):  # twenty callers waiting at once
        load.start(f"t{i}")
    await timer.run_for(1.0)
    times = [round(t - START, 6) for t in load.times()]
    # The second slot (1 ms) fires at 9 ms: the slots up to 9 ms go then, the rest keep theirs.
    assert times == pytest.approx([0.0] + [0.009] * 9 + [0.001 * n for n in range(10, 20)])


async def test_the_tolerance_floor_releases_no_burst_from_idle() -> None:
    limiter, timer = _limiter(1_000.0)
    load = Load(limiter, timer)
    load.start("a", 3)
    await timer.run_for(10.0)
    start = timer.now
    load.start("b", 5)
    await timer.run_for(10.0)
    assert [t - start for t in load.times()[3:]] == pytest.approx([0.0, 0.001, 0.002, 0.003, 0.004])


async def test_long_run_rate_equals_the_budget_with_late_wake_ups() -> None:
    rate = 50.0
    rng = random.Random(7)
    # Wake-ups up to 2 ms late; the old token bucket lost 5% of 50/s to 1 ms of lateness.
    limiter, timer = _limiter(rate, timer=FakeTimer(lambda: rng.uniform(0.0, 0.002)))
    load = Load(limiter, timer)
    for i in range(8):
        load.start(f"t{i}", 1_250)
    await timer.run_for(400.0)
    times = load.times()
    assert len(times) == 10_000
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved / rate == pytest.approx(1.0, abs=0.005)
    assert busiest_window(times) <= rate


async def test_wake_ups_however_late_never_put_more_than_the_rate_in_one_second() -> None:
    rate = 20.0
    rng = random.Random(11)
    late = lambda: rng.choice([0.0] * 12 + [0.001, 0.02, 0.07, 0.16, 0.4])  # noqa: E731 - to 8 T
    limiter, timer = _limiter(rate, timer=FakeTimer(late))
    load = Load(limiter, timer)
    for i in range(6):
        load.start(f"t{i}", 500)
    await timer.run_for(1_000.0)
    times = load.times()
    assert len(times) == 3_000
    assert busiest_window(times) <= rate
    made_up = sum(1 for a, b in itertools.pairwise(times) if b == a)
    assert made_up > 0  # two grants at once: a late slot and the one that makes up for it


_GAP = st.floats(0.0, 0.4)
_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), _GAP, st.integers(1, 300), st.booleans()),
        st.tuples(st.just("ceiling"), _GAP, st.floats(0.5, 60.0), st.booleans()),
        st.tuples(st.just("throttled"), _GAP, st.just(0), st.booleans()),
        st.tuples(st.just("success"), _GAP, st.integers(1, 50), st.booleans()),
        st.tuples(st.just("cancel"), _GAP, st.integers(0, 1_000), st.booleans()),
    ),
    min_size=1,
    max_size=40,
)


class RateLog:
    """Every rate the limiter was at, with when it took it."""

    def __init__(self, timer: FakeTimer) -> None:
        self._timer = timer
        self.changes: list[tuple[float, float]] = []

    def __call__(self, rate: float) -> None:
        self.changes.append((self._timer.now, rate))

    def highest(self, start: float, end: float) -> float:
        """The highest rate in force at any moment of [start, end]."""
        before = [r for t, r in self.changes if t < start][-1:]
        during = [r for t, r in self.changes if start <= t <= end]
        return max(before + during)


def _schedule(limiter: RateLimiter, timer: FakeTimer, load: Load, events: list[tuple]) -> None:
    at = timer.now
    for kind, gap, value, urgent in events:
        at += gap

        def act(kind: str = kind, value: float = value, urgent: bool = urgent) -> None:
            if kind == "arrive":  # a few tasks (a backlog), each taking grants in a row
                for _ in range(int(value) % 6 + 1):
                    load.start(kind, int(value) // 6 + 1, urgent=urgent)
            elif kind == "ceiling":
                limiter.set_ceiling(value)
            elif kind == "throttled":
                limiter.on_throttled()
            elif kind == "success":
                for _ in range(int(value)):
                    limiter.on_success()
            elif load.tasks:
                load.tasks[int(value) % len(load.tasks)].cancel()

        timer.call_at(at, act)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.floats(0.5, 60.0),
    events=_EVENTS,
    lateness=st.lists(st.floats(0.0, 0.3), min_size=1, max_size=20),
    try_first=st.booleans(),
)
async def test_no_one_second_window_holds_more_grants_than_the_rate(
    rate: float, events: list[tuple], lateness: list[float], try_first: bool
) -> None:
    """Whether grants are waited for (`acquire`) or taken as their slot comes (`try_acquire`)."""
    late = itertools.cycle(lateness)
    timer = FakeTimer(lambda: next(late))
    log = RateLog(timer)
    limiter = RateLimiter(rate, warmup_timeout=0.0, timer=timer, on_change=log)
    load = Load(limiter, timer, try_first=try_first)
    _schedule(limiter, timer, load, events)
    await timer.run_for(30.0)
    times = sorted(load.times())
    for i, start in enumerate(times):
        inside = [t for t in times[i:] if t < start + 1.0 - EPSILON]
        highest = log.highest(start, inside[-1])
        assert len(inside) <= math.ceil(highest - 1e-9), (start, highest, inside)
    await load.stop()


# -- taking a slot without waiting ---------------------------------------------------------------


async def test_try_acquire_takes_a_slot_that_has_come_and_the_next_one_is_an_interval_away() -> (
    None
):
    limiter, timer = _limiter(4.0)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()  # the next slot is 0.25 s away
    timer.now += 0.2
    assert not limiter.try_acquire()
    timer.now += 0.05
    assert limiter.try_acquire()
    assert timer.pending() == []  # nothing waits: no alarm armed


async def test_try_acquire_never_takes_the_slot_of_a_waiter() -> None:
    limiter, timer = _limiter(4.0)
    assert limiter.try_acquire()
    load = Load(limiter, timer)
    load.start("waiter")
    await settle()
    assert load.grants == []
    timer.now += 1.0  # the waiter's slot has come, its alarm not yet fired
    assert not limiter.try_acquire()
    assert not limiter.try_acquire(urgent=True)
    await timer.run_for(0.0)
    assert load.order() == ["waiter"]


async def test_try_acquire_keeps_the_start_up_gate() -> None:
    limiter, timer = _limiter(20.0, warmup_timeout=5.0)
    assert limiter.try_acquire()
    timer.now += 1.0
    assert not limiter.try_acquire()  # the first call has not completed
    limiter.on_success()
    assert limiter.try_acquire()  # the schedule restarts from the completion
    assert not limiter.try_acquire()
    timer.now += 1 / 20.0
    assert limiter.try_acquire()


async def test_try_acquire_after_idle_releases_no_burst() -> None:
    limiter, timer = _limiter(10.0, burst=3.0)
    assert limiter.try_acquire()
    timer.now += 60.0  # idle: not owed
    granted = 0
    while limiter.try_acquire():
        granted += 1
    assert granted == 1


# -- rate changes reach current waiters -----------------------------------------------------------


async def test_a_higher_rate_reaches_a_waiter_already_waiting() -> None:
    limiter, timer = _limiter(1.0)
    load = Load(limiter, timer)
    load.start("a", 2)
    await timer.run_for(0.1)
    assert len(load.grants) == 1  # the second waits for START + 1.0
    limiter.set_ceiling(20.0)
    await timer.run_for(0.0)
    assert [t - START for t in load.times()] == pytest.approx([0.0, 0.1])


async def test_a_lower_rate_reaches_a_waiter_already_waiting() -> None:
    limiter, timer = _limiter(20.0)
    load = Load(limiter, timer)
    load.start("a", 2)
    await timer.run_for(0.01)
    limiter.set_ceiling(1.0)  # a rebalance: this replica's share shrinks
    await timer.run_for(5.0)
    assert [t - START for t in load.times()] == pytest.approx([0.0, 1.0])


async def test_a_throttle_reaches_a_waiter_already_waiting() -> None:
    limiter, timer = _limiter(8.0, decrease_factor=0.5)
    load = Load(limiter, timer)
    load.start("a", 2)
    await timer.run_for(0.1)
    limiter.on_throttled()  # at START + 0.1: the next slot is a full interval at 4/s away
    await timer.run_for(5.0)
    assert [t - START for t in load.times()] == pytest.approx([0.0, 0.35])


# -- lanes and cancellation ---------------------------------------------------------------------


async def test_urgent_overtakes_queued_bulk_and_each_lane_is_first_come_first_served() -> None:
    limiter, timer = _limiter(2.0)
    load = Load(limiter, timer)
    for label in ("b1", "b2", "b3"):
        load.start(label)
    await timer.run_for(0.1)
    load.start("u1", urgent=True)
    load.start("u2", urgent=True)
    await settle()
    assert (limiter.waiting(urgent=True), limiter.waiting()) == (2, 2)
    await timer.run_for(10.0)
    assert load.order() == ["b1", "u1", "u2", "b2", "b3"]
    assert [t - START for t in load.times()] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert (limiter.waiting(urgent=True), limiter.waiting()) == (0, 0)


async def test_a_cancelled_waiter_gives_up_its_place_not_the_slot() -> None:
    limiter, timer = _limiter(2.0)
    load = Load(limiter, timer)
    tasks = {label: load.start(label) for label in ("a", "b", "c", "d")}
    await timer.run_for(0.1)
    tasks["b"].cancel()  # b waited for START + 0.5
    await settle()
    assert limiter.waiting() == 2
    await timer.run_for(10.0)
    assert load.order() == ["a", "c", "d"]
    assert [t - START for t in load.times()] == pytest.approx([0.0, 0.5, 1.0])
    assert tasks["b"].cancelled()
    assert limiter.waiting() == 0
    assert timer.pending() == []


async def test_a_waiter_cancelled_once_granted_hands_the_slot_on() -> None:
    limiter, timer = _limiter(2.0)
    load = Load(limiter, timer)
    tasks = {label: load.start(label) for label in ("a", "b", "c", "d")}
    await timer.run_for(0.1)
    assert timer.fire_next()  # b's slot: b is granted but has not run yet
    tasks["b"].cancel()
    await timer.run_for(10.0)
    assert load.order() == ["a", "c", "d"]
    assert [t - START for t in load.times()] == pytest.approx([0.0, 0.5, 1.0])
    assert limiter.waiting() == 0


async def test_cancelling_every_waiter_leaves_a_limiter_that_still_works() -> None:
    limiter, timer = _limiter(2.0)
    load = Load(limiter, timer)
    load.start("a")
    waiting = [load.start(f"w{i}", urgent=i % 2 == 0) for i in range(6)]
    await timer.run_for(0.1)
    for task in waiting:
        task.cancel()
    await timer.run_for(10.0)
    assert (limiter.waiting(urgent=True), limiter.waiting()) == (0, 0)
    assert timer.pending() == []
    assert await limiter.acquire() == 0.0


# -- start-up -----------------------------------------------------------------------------------


async def test_start_up_grants_one_until_the_first_call_completes() -> None:
    limiter, timer = _limiter(20.0, warmup_timeout=5.0)
    load = Load(limiter, timer)
    for i in range(30):
        load.start(f"t{i}")
    await timer.run_for(2.0)  # the first call is still setting up its connection
    assert len(load.grants) == 1
    limiter.on_done()
    await timer.run_for(10.0)
    times = [t - START for t in load.times()]
    # The schedule restarts when the first call completed: one every interval from there.
    assert times == pytest.approx([0.0] + [2.0 + i / 20.0 for i in range(29)])
    assert busiest_window(load.times()) <= 20


@pytest.mark.parametrize("report", ["on_success", "on_throttled", "on_done"])
async def test_any_completion_report_opens_the_start_up_gate(report: str) -> None:
    limiter, timer = _limiter(4.0, warmup_timeout=5.0)
    load = Load(limiter, timer)
    load.start("a")
    load.start("b")
    await timer.run_for(0.5)
    assert len(load.grants) == 1
    getattr(limiter, report)()
    await timer.run_for(5.0)
    # A throttle also lowers the rate (4/s to 3/s) and keeps the next call a full interval away.
    second = 0.5 + 1 / 3.0 if report == "on_throttled" else 0.5
    assert [t - START for t in load.times()] == pytest.approx([0.0, second])


async def test_without_a_report_the_gate_opens_after_the_warm_up_timeout() -> None:
    limiter, timer = _limiter(4.0, warmup_timeout=3.0)
    load = Load(limiter, timer)
    load.start("a", 3)
    await timer.run_for(10.0)
    assert [t - START for t in load.times()] == pytest.approx([0.0, 3.0, 3.25])


# -- what the consumer can ask ------------------------------------------------------------------


async def test_next_free_in_counts_the_slot_and_the_waiters_ahead() -> None:
    limiter, timer = _limiter(2.0)
    assert limiter.next_free_in() == 0.0
    load = Load(limiter, timer)
    load.start("a")
    await settle()
    assert limiter.next_free_in() == pytest.approx(0.5)
    load.start("b")
    load.start("c")
    await timer.run_for(0.1)
    assert limiter.next_free_in(urgent=True) == pytest.approx(0.4)
    assert limiter.next_free_in() == pytest.approx(0.4 + 2 / 2.0)
    await load.stop()


async def test_limiters_share_nothing() -> None:
    timer = FakeTimer()
    first, _ = _limiter(10.0, timer=timer)
    second, _ = _limiter(10.0, timer=timer)
    assert await first.acquire() == 0.0
    assert await second.acquire() == 0.0  # its own schedule
    first.on_throttled()
    assert second.rate == 10.0
    assert first.waiting() == second.waiting() == 0


def test_construction_needs_no_running_event_loop() -> None:
    limiter = RateLimiter(10.0)
    limiter.set_ceiling(5.0)
    assert limiter.rate == 5.0


async def test_the_default_timer_is_the_running_loop() -> None:
    limiter = RateLimiter(1_000_000.0)
    assert await limiter.acquire() == pytest.approx(0.0, abs=0.05)
    limiter.on_done()
    assert await limiter.acquire() == pytest.approx(0.0, abs=0.05)


# -- AIMD ---------------------------------------------------------------------------------------


async def test_set_ceiling_changes_the_rate() -> None:
    limiter, timer = _limiter(10.0)
    limiter.set_ceiling(2.0)
    assert (limiter.ceiling, limiter.rate) == (2.0, 2.0)
    load = Load(limiter, timer)
    load.start("a", 5)
    await timer.run_for(100.0)
    assert load.times()[-1] - START == pytest.approx(4 / 2.0)
    limiter.set_ceiling(8.0)  # at full rate: the rate follows up
    assert limiter.rate == 8.0


async def test_on_change_hears_every_new_rate() -> None:
    heard: list[float] = []
    limiter = RateLimiter(
        8.0,
        decrease_factor=0.5,
        quiet_decrease_factor=0.5,
        timer=FakeTimer(),
        on_change=heard.append,
    )
    limiter.on_throttled()
    limiter.set_ceiling(2.0)
    limiter.set_ceiling(2.0)
    assert heard == [8.0, 4.0, 2.0]


async def test_set_ceiling_never_goes_below_the_minimum_rate() -> None:
    limiter, _ = _limiter(10.0)
    limiter.set_ceiling(0.0)
    assert (limiter.ceiling, limiter.rate) == (MIN_RATE, MIN_RATE)


async def test_raising_the_ceiling_while_throttled_keeps_the_lower_rate() -> None:
    limiter, _ = _limiter(8.0, decrease_factor=0.5)
    limiter.on_throttled()
    assert limiter.rate == 4.0
    limiter.set_ceiling(16.0)
    assert limiter.rate == 4.0
    limiter.set_ceiling(2.0)  # a lower ceiling caps it
    assert limiter.rate == 2.0


async def test_on_throttled_halves_down_to_the_minimum() -> None:
    limiter, _ = _limiter(8.0, decrease_factor=0.5, decrease_interval=0.0)
    rates = []
    for _ in range(12):
        limiter.on_throttled()
        rates.append(limiter.rate)
    assert rates[:4] == [4.0, 2.0, 1.0, 0.5]
    assert rates[-1] == MIN_RATE == min(rates)
    assert limiter.ceiling == 8.0


async def test_the_default_decrease_is_a_quarter_and_stops_at_the_minimum() -> None:
    limiter, timer = _limiter(8.0)
    limiter.on_throttled()
    assert limiter.rate == 6.0
    for _ in range(200):
        timer.now += 10.0
        limiter.on_throttled()
    assert limiter.rate == MIN_RATE


async def test_a_burst_of_throttles_within_the_interval_decreases_once() -> None:
    limiter, timer = _limiter(8.0, decrease_factor=0.5, decrease_interval=1.0)
    for _ in range(5):
        limiter.on_throttled()  # the in-flight calls of one burst all come back throttled
    assert limiter.rate == 4.0
    timer.now += 0.5
    limiter.on_throttled()
    assert limiter.rate == 4.0
    timer.now += 0.5
    limiter.on_throttled()
    assert limiter.rate == 2.0


async def test_after_a_throttle_the_next_grant_waits_a_full_interval_at_the_new_rate() -> None:
    limiter, timer = _limiter(8.0, decrease_factor=0.5)
    await timer.run_for(10.0)
    limiter.on_throttled()
    start = timer.now
    load = Load(limiter, timer)
    load.start("a")
    await timer.run_for(10.0)
    assert load.times()[0] - start == pytest.approx(1 / 4.0)


async def test_on_success_climbs_back_additively_to_the_ceiling_and_never_above() -> None:
    limiter, _ = _limiter(16.0, decrease_factor=0.5, decrease_interval=0.0, increase_fraction=0.25)
    limiter.on_throttled()
    limiter.on_throttled()
    assert limiter.rate == 4.0
    limiter.on_success()
    # A quarter of the ceiling (4/s) per second of successes: at 4/s, one success adds 4/4.
    assert limiter.rate == pytest.approx(5.0)
    previous = limiter.rate
    for _ in range(500):
        limiter.on_success()
        assert previous <= limiter.rate <= 16.0
        previous = limiter.rate
    assert limiter.rate == 16.0


async def test_one_second_of_successes_adds_about_the_increase_fraction_of_the_ceiling() -> None:
    limiter, _ = _limiter(100.0, decrease_factor=0.2, decrease_interval=0.0, increase_fraction=0.05)
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(20.0)
    for _ in range(20):  # one second's worth at 20/s
        limiter.on_success()
    assert 24.0 < limiter.rate <= 25.0  # +5/s, a little less as the rate itself climbs


async def test_on_success_below_one_per_second_adds_at_least_half_a_grant() -> None:
    limiter, _ = _limiter(1.0, decrease_factor=0.5, decrease_interval=0.0)
    for _ in range(10):
        limiter.on_throttled()
    assert limiter.rate == MIN_RATE
    limiter.on_success()
    assert limiter.rate == pytest.approx(MIN_RATE + 0.5)
    limiter.on_success()
    assert limiter.rate == 1.0  # capped at the ceiling


async def test_on_success_at_the_ceiling_changes_nothing() -> None:
    limiter, _ = _limiter(5.0)
    limiter.on_success()
    assert limiter.rate == 5.0


@pytest.mark.parametrize(
    ("budget", "assigned", "total", "share"),
    [(20.0, 3, 6, 10.0), (20.0, 0, 6, 0.0), (20.0, 9, 6, 20.0), (20.0, 0, 0, 20.0)],
)
def test_partition_share(budget: float, assigned: int, total: int, share: float) -> None:
    assert partition_share(budget, assigned, total) == share


async def test_near_the_rate_last_throttled_at_the_climb_is_slower() -> None:
    limiter, _ = _limiter(100.0, decrease_factor=0.5, decrease_interval=0.0, increase_fraction=0.05)
    limiter.on_throttled()  # throttled at 100/s: down to 50
    limiter.on_throttled()  # throttled again at 50/s: down to 25, and 45..55 is now probed gently
    for _ in range(200):
        limiter.on_success()
        if limiter.rate >= 45.0:
            break
    far = limiter.rate
    assert far >= 45.0  # +5/s per second of successes below the band
    for _ in range(int(far)):  # one second's worth of successes inside the band
        limiter.on_success()
    assert 0 < limiter.rate - far <= 5.0 / CAUTIOUS_SLOWDOWN + 0.1


async def test_a_throttle_after_a_quiet_spell_takes_a_light_step_and_the_next_the_full_one() -> (
    None
):
    timer = FakeTimer()
    limiter = RateLimiter(50.0, decrease_factor=0.85, quiet_decrease_factor=0.95, timer=timer)
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(47.5)  # a stray early call at an exact quota
    timer.now += 1.0
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(47.5 * 0.85)  # it is someone else after all


async def test_a_throttle_drops_straight_to_what_succeeded_in_the_last_second() -> None:
    timer = FakeTimer()
    limiter = RateLimiter(60.0, decrease_factor=0.9, quiet_decrease_factor=0.95, timer=timer)
    for i in range(20):  # 20/s got through: another app has the rest
        timer.now = START + i * 0.05
        limiter.on_success()
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(30.0)  # never below half in one step
    timer.now += 1.0
    for _ in range(19):  # 19 in the last second get through
        timer.now += 0.05
        limiter.on_success()
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(19.0)


async def test_a_hold_grants_nothing_but_one_urgent_request() -> None:
    limiter, timer = _limiter(10.0)
    load = Load(limiter, timer)
    limiter.hold(1.0)
    load.start("bulk", 3)
    load.start("urgent", 2, urgent=True)
    await timer.run_for(0.5)
    assert load.grants == [("urgent", START)]  # the one call of tolerance, to the urgent lane
    await timer.run_for(1.0)
    assert [label for label, t in load.grants if t >= START + 1.0][:2] == ["urgent", "bulk"]
    assert min(t for label, t in load.grants if label == "bulk") >= START + 1.0
    await load.stop()


async def test_a_caller_resuming_late_is_counted_from_when_it_ran() -> None:
    limiter, timer = _limiter(2.0)
    first = asyncio.create_task(limiter.acquire())
    await settle()
    assert first.done()  # granted at START and ran at once
    second = asyncio.ensure_future(limiter.acquire())
    await settle()
    assert timer.fire_next()  # granted at START + 0.5, without letting the task run...
    timer.now = START + 0.8  # ... the loop was busy: it ran only at START + 0.8
    await settle()
    assert second.done()
    third = asyncio.ensure_future(limiter.acquire())
    await timer.run_until(START + 1.0)
    assert third.done()  # its slot, START + 1.0: one call (at START + 0.8) in the second before
    fourth = asyncio.ensure_future(limiter.acquire())
    await timer.run_until(START + 1.79)
    assert not fourth.done()  # its slot was START + 1.5, but START + 0.8 and 1.0 are in the second
    await timer.run_until(START + 1.81)
    assert fourth.done()


async def _granted_then_written(
    limiter: RateLimiter, timer: FakeTimer, at: float | None = None
) -> None:
    """A request as the handler and the HTTP layer make it: a grant now; its bytes written at `at`
    (None: no report, as before the HTTP layer made one)."""
    assert limiter.try_acquire()
    if at is not None:
        timer.now = at
        request_written()


@pytest.mark.parametrize("reported", [True, False])
async def test_a_request_written_late_is_counted_from_its_write(reported: bool) -> None:
    limiter, timer = _limiter(2.0)  # two a second: START and START + 0.5
    first = asyncio.create_task(
        _granted_then_written(limiter, timer, START + 0.3 if reported else None)
    )
    await settle()
    assert first.done()
    assert first.exception() is None
    load = Load(limiter, timer)
    load.start("b", 2)
    await timer.run_until(START + 2.0)
    # The second call at its slot; the third at START + 1.0 only if the first left at START.
    third = START + 1.3 if reported else START + 1.0
    assert load.times() == pytest.approx([START + 0.5, third])
    await load.stop()


async def test_a_write_counts_the_writing_tasks_own_grant_and_only_once() -> None:
    limiter, timer = _limiter(1.0)

    async def write_at(at: float) -> None:  # as aiohttp does: a writer task, a copy of the context
        timer.now = at
        request_written()

    async def holder() -> None:
        assert limiter.try_acquire()
        await asyncio.create_task(write_at(START + 0.2))
        await asyncio.create_task(write_at(START + 0.4))  # another request on the same grant

    await asyncio.create_task(holder())
    await asyncio.create_task(write_at(START + 0.6))  # a task that holds no grant: moves nothing
    load = Load(limiter, timer)
    load.start("next")
    await timer.run_until(START + 2.0)
    assert load.times() == pytest.approx([START + 1.2])  # one second after the one write
    await load.stop()


@pytest.mark.parametrize("written", [True, False])
async def test_a_waiter_resuming_late_and_written_later_is_counted_once_from_its_write(
    written: bool,
) -> None:
    limiter, timer = _limiter(2.0)  # two a second: slots at START, START + 0.5, START + 1.0, ...
    assert limiter.try_acquire()  # granted at START; its request is never reported

    async def write_at(at: float) -> None:  # as aiohttp does: a writer task, a copy of the context
        timer.now = at
        request_written()

    async def waiter() -> None:
        await limiter.acquire()
        if written:
            await asyncio.create_task(write_at(START + 0.9))

    waiting = asyncio.create_task(waiter())
    await settle()
    assert timer.fire_next()  # granted at START + 0.5, without letting the task run...
    timer.now = START + 0.8  # ... the loop was busy: it ran only at START + 0.8
    await settle()
    assert waiting.done()
    load = Load(limiter, timer)
    load.start("c", 2)
    await timer.run_until(START + 3.0)
    # The window holds START and the waiter's call, from its write (0.9) or from when it ran (0.8).
    last = START + 0.9 if written else START + 0.8
    assert load.times() == pytest.approx([START + 1.0, last + 1.0])
    await load.stop()


async def test_a_write_after_its_grant_left_the_window_is_counted_again() -> None:
    limiter, timer = _limiter(1.0)
    assert limiter.try_acquire()  # granted at START; its connection takes 1.5 s
    load = Load(limiter, timer)
    load.start("b")
    await timer.run_until(START + 1.0)
    assert load.times() == [START + 1.0]  # the window no longer holds the grant at START
    timer.now = START + 1.5
    request_written()
    load.start("c")
    await timer.run_until(START + 3.0)
    assert load.times()[1] == pytest.approx(START + 2.5)  # not at its slot, START + 2.0
    await load.stop()


async def test_a_second_throttle_confirms_a_light_step_and_a_refused_interval_pauses() -> None:
    timer = FakeTimer()
    limiter = RateLimiter(60.0, decrease_factor=0.9, quiet_decrease_factor=0.95, timer=timer)
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(57.0)  # light: maybe one early call
    timer.now += 0.01
    limiter.on_throttled()  # the call after an early one finds the window full: still light
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(57.0)
    limiter.on_throttled()  # three: another app. The full step at once, and more refused than
    assert limiter.rate == pytest.approx(57.0 * 0.9)  # accepted since: nothing for an interval
    load = Load(limiter, timer)
    load.start("a")
    await timer.run_for(1.0)
    assert load.times()[0] >= START + 0.01 + 0.25
    await load.stop()
