"""Pacing calls against one rate budget: a virtual schedule, two lanes, AIMD, the partition share.

**Schedule (GCRA / virtual scheduling).** Each grant has a scheduled time, its *slot*; the next slot
is one emission interval T = 1/rate after the last one, and a waiter is granted once its slot has
come. A late wake-up does not move the schedule: the next slot stays where it was, so the time lost
is made up. Making up is bounded by the tolerance, `burst` emission intervals (default one) but
never less than `MIN_TOLERANCE` (10 ms, about how often a busy event loop gets round to a timer):
the next slot is never earlier than `last grant + T - tolerance`. Without that floor a budget of
thousands a second would grant two calls per wake-up of the loop, whatever the rate; at the rates
Cognito allows (T of 10 ms or more) the floor changes nothing. Idle time is not owed: a request
that finds nobody waiting is scheduled no earlier than its arrival, so an idle limiter releases no
burst. A request whose slot has come while nobody waits takes it at once (`try_acquire`, and the
first step of `acquire`): no future, no turn of the event loop, the same accounting.

**Never over the budget in any window.** On top of the schedule, no `window` seconds (default one,
Cognito's quota period) hold more than ⌈rate⌉ grants, the rate being the one in force at each grant.
A grant counts from when its caller actually resumed: on a busy event loop that can be some
milliseconds after the grant, and the call goes out then.
So making up never puts a second over the budget; what a late wake-up costs is at most its own
lateness once per second (about 0.1% for 1 ms), where a token bucket capped at one token loses it
on every interval. Better still, a grant counts from when its request is written to the socket:
the HTTP layer calls `request_written()` then (see `cognito`). Between a grant and that write the
event loop may run other work, and on a busy or CPU-throttled process that has taken over 10 ms;
without this report a request granted at the right moment could leave late enough to put two of
the budget's calls into one of Cognito's seconds. (A write more than a window after its grant, a
connection that took that long, is counted again from the write: by then the window has let others
go, so that one second can hold a call more; nothing can undo a call already granted.) What
remains is the delay from the socket to Cognito, which varies too: a `window` a little above one
second buys margin for that, at the same cost in rate.

**Start-up.** A fresh process's first calls wait on connection set-up and would then reach Cognito
together. So until the first call has completed, one grant only: the rest wait until the caller
reports a completion (`on_success`, `on_throttled` or `on_done`), and the schedule restarts at that
moment. Should no report come (a caller that reports only some outcomes), the gate opens
`warmup_timeout` seconds after the first grant; 0 disables it.

**Lanes.** `acquire(urgent=True)` takes the next slot before any bulk waiter; first come, first
served within a lane. Priority is strict: while urgent requests alone fill the budget, bulk waits
(visible through `waiting()`). A waiter cancelled while waiting gives up its place and the next one
takes the slot when it comes; one cancelled after its slot was granted, before it could run, hands
the slot on at once.

**Rate changes reach current waiters.** Nobody sleeps: waiters hold futures, and one timer is armed
for the next slot. A new ceiling (`set_ceiling`, after a rebalance) or an AIMD step recomputes the
slot and re-arms the timer. A lower ceiling applies at once; a higher one can be put off
(`raise_after`): after a rebalance the partitions' previous owner made its last calls at its own
rate, and those stay in Cognito's one-second window for a second. `hold` grants nothing for a while
(a replica that had no share of the budget before).

**AIMD.** On TooManyRequests someone else is using the account's quota: the rate drops by
`decrease_factor` (at most once per `decrease_interval`, so one burst of throttles counts once) and
the next slot is a full interval at the new rate away; each success adds back `increase_fraction`
of the ceiling per second's worth of successes, never above the ceiling (this replica's share of
the budget, set on every rebalance). The decrease goes straight down to the successes of the last
second (Cognito's window) when they are fewer (to what another app leaves, in a step or two), and
no lower than half the rate. A throttle after `QUIET_SECONDS` without one takes only
`quiet_decrease_factor` off: at a quota exactly equal to the budget it is one call landing early; if
it is another app, the next throttles (three) confirm it and take the full step at once. When more
calls were refused than accepted since the last step, Cognito's window is full and anything sent
before it frees is refused too: the next call waits a whole interval. Near the rate it was last
throttled at (within 10%) it climbs `CAUTIOUS_SLOWDOWN` times slower: what is left of a shared quota
is found again quickly and then probed gently, so throttles stay rare and the rate stays close to
what is available.

The event loop is taken at first use (or a `Timer` is injected), and nothing is shared between
limiters: one per budget.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Protocol

MIN_RATE = 0.1
MIN_TOLERANCE = 0.01  # seconds of lateness made up at once, whatever the rate
CAUTIOUS_SLOWDOWN = 8.0
CAUTIOUS_BAND = 0.1  # within 10% of the rate last throttled at
CONFIRMING_THROTTLES = 3  # after a light step: another app, not a stray early call
QUIET_SECONDS = 10.0  # a throttle after this long without one: a light step (a stray call)
URGENT, BULK = 0, 1


def request_written() -> None:
    """The request this task was granted a slot for is being written to the socket now: its grant
    counts in the window from now. Called by the HTTP layer; does nothing without a grant (a
    request that needs none, or one already reported)."""
    grant = _HELD.get()
    if grant is not None and grant.limiter is not None:
        limiter, grant.limiter = grant.limiter, None  # seen by every copy of the context
        limiter._written(grant.counted_at)


class Alarm(Protocol):
    def cancel(self) -> None: ...


class Timer(Protocol):
    """A clock and one-shot callbacks at a time of that clock; the running event loop is one."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[[], None]) -> Alarm: ...


class _LoopTimer:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def time(self) -> float:
        return self._loop.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Alarm:
        return self._loop.call_at(when, callback)


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        decrease_factor: float = 0.9,
        quiet_decrease_factor: float = 0.95,
        decrease_interval: float = 0.25,
        increase_fraction: float = 0.05,
        warmup_timeout: float = 5.0,
        window: float = 1.0,
        timer: Timer | None = None,
        on_change: Callable[[float], None] = lambda rate: None,
    ) -> None:
        self._timer = timer
        self._time: Callable[[], float] | None = timer.time if timer is not None else None
        self._burst = burst
        self._decrease = decrease_factor
        self._decrease_interval = decrease_interval
        self._increase_fraction = increase_fraction
        self._warmup_timeout = warmup_timeout
        self._window = window
        self._last_decrease = float("-inf")
        self._throttled_at = float("inf")  # the rate when Cognito last said "too many"
        self._quiet_decrease = quiet_decrease_factor
        self._successes: deque[float] = deque()  # recent successful completions
        self._refused = self._accepted = 0  # throttles and successes since the last decrease
        self._light = False  # the last decrease was the light one after a quiet spell
        self._ceiling = max(rate, MIN_RATE)
        self._rate = self._ceiling
        self._slot = float("-inf")  # the scheduled time of the last grant
        self._last = float("-inf")  # when the last grant was made
        self._not_before = float("-inf")  # arrival after idle, throttling, end of start-up
        self._held_until = float("-inf")  # `hold`: nothing granted before, but `_spare` urgent
        self._spare = 0
        self._recent: deque[float] = deque()  # grant times within the last window
        self._warm = warmup_timeout <= 0  # a call has completed: connections are set up
        self._warm_by: float | None = None  # when start-up stops waiting for that report
        self._lanes: tuple[deque[asyncio.Future[float]], ...] = (deque(), deque())
        self._waiting = [0, 0]
        self._alarm: Alarm | None = None
        self._alarm_at = float("inf")
        self._raise: Alarm | None = None  # a higher ceiling put off until its time
        self._on_change = on_change
        on_change(self._rate)

    @property
    def rate(self) -> float:
        """The current rate (grants per second)."""
        return self._rate

    @property
    def ceiling(self) -> float:
        return self._ceiling

    def waiting(self, urgent: bool = False) -> int:
        """How many requests of a lane wait for a slot."""
        return self._waiting[URGENT if urgent else BULK]

    def next_free_in(self, urgent: bool = False) -> float:
        """About how long a request arriving now in that lane would wait (0 when a slot is free)."""
        ahead = self._waiting[URGENT] + (0 if urgent else self._waiting[BULK])
        now = self._now()
        due = self._due() if ahead else max(self._due(), now)
        return max(0.0, due - now) + ahead / self._rate

    def try_acquire(self, urgent: bool = False) -> bool:
        """Take this request's slot if it has come and nobody waits for one; else False (then
        `acquire`). Lets a caller skip what it does around a real wait."""
        if any(self._waiting):
            return False
        now = self._now()
        self._not_before = max(self._not_before, now)  # idle time is not owed
        if self._take_slot(URGENT if urgent else BULK, now) is not None:
            return False
        _HELD.set(_Grant(self, now))
        return True

    async def acquire(self, urgent: bool = False) -> float:
        """Wait for this request's slot; returns the seconds waited."""
        started = self._now()
        lane = URGENT if urgent else BULK
        if not any(self._waiting):
            self._not_before = max(self._not_before, started)  # idle time is not owed
            if self._take_slot(lane, started) is None:
                _HELD.set(_Grant(self, started))
                return 0.0  # its slot has come: no future, no turn of the loop
        granted = asyncio.get_running_loop().create_future()
        self._lanes[lane].append(granted)
        self._waiting[lane] += 1
        self._pump()
        try:
            granted_at = await granted
        except asyncio.CancelledError:
            self._abandon(granted, lane)
            raise
        now = self._now()
        if now > granted_at:
            self._recount(granted_at, now)  # the caller ran only now (a busy loop)
        _HELD.set(_Grant(self, max(now, granted_at)))
        return now - started

    def _written(self, counted_at: float) -> None:
        now = self._now()
        if now > counted_at:
            self._recount(counted_at, now)

    def _recount(self, counted_at: float, now: float) -> None:
        """A granted call goes out only now: the window counts it from now, and the calls after it
        keep their distance from when it really went. One that has already left the window (a
        write more than a window after its grant) is counted again, from now."""
        recent = self._recent
        for i in range(len(recent) - 1, -1, -1):
            if recent[i] == counted_at:
                del recent[i]
                break
        recent.append(now)  # no grant is later than now: the order holds
        # A waiter's alarm armed for the old window fires, finds its turn moved and re-arms.

    def set_ceiling(self, rate: float, raise_after: float = 0.0) -> None:
        """A new share of the budget (after a rebalance); the current rate follows at most.

        A lower ceiling applies at once, a higher one `raise_after` seconds from now (the old one
        stays in force meanwhile); a later call replaces a raise not yet made."""
        if self._raise is not None:
            self._raise.cancel()
            self._raise = None
        if rate > self._ceiling and raise_after > 0:
            self._raise = self._clock().call_at(
                self._now() + raise_after, lambda: self._raise_ceiling(rate)
            )
            return
        self._apply_ceiling(rate)

    def hold(self, seconds: float) -> None:
        """Grant nothing for `seconds` (waiters keep their places), but one urgent request: the
        one call of tolerance over the budget goes to the lane that exists not to wait."""
        self._held_until = max(self._held_until, self._now() + seconds)
        self._spare = 1
        self._pump()

    def _raise_ceiling(self, rate: float) -> None:
        self._raise = None
        self._apply_ceiling(rate)

    def _apply_ceiling(self, rate: float) -> None:
        at_full_rate = self._rate >= self._ceiling
        self._ceiling = max(rate, MIN_RATE)
        self._set_rate(self._ceiling if at_full_rate else min(self._rate, self._ceiling))

    def on_throttled(self) -> None:
        """Multiplicative decrease, once per interval however many throttles arrive in it."""
        now = self._now()
        self._refused += 1
        # After a light step, more throttles are confirmation, not the same burst: step at once.
        # (An early call at an exact quota makes two: the call after it finds the window full.)
        confirmed = self._light and self._refused >= CONFIRMING_THROTTLES
        if confirmed or now - self._last_decrease >= self._decrease_interval:
            quiet = now - self._last_decrease >= QUIET_SECONDS
            self._light = quiet and self._quiet_decrease > self._decrease
            # More refused than accepted since the last step: Cognito's window is full, and
            # whatever is sent before it frees is refused too. Wait out one interval.
            shut = not quiet and self._refused > self._accepted
            factor = self._quiet_decrease if quiet else self._decrease
            self._last_decrease = now
            self._refused = self._accepted = 0
            self._throttled_at = self._rate
            self._rate = max(self._decreased(factor, now), MIN_RATE)
            pause = self._decrease_interval if shut else 1.0 / self._rate
            self._not_before = max(self._not_before, now + pause)
            self._changed()
        self.on_done()

    def _decreased(self, factor: float, now: float) -> float:
        """The rate after a throttle: `factor` of it, or of the successes in the last second
        (Cognito's window) if that is less (straight down to what another app leaves), never
        below half of it."""
        self._forget_successes(now, 1.0)
        target = self._rate * factor
        if self._successes:
            target = min(target, float(len(self._successes)))
        return max(target, self._rate * min(self._decrease, 0.5))

    def _forget_successes(self, now: float, span: float) -> None:
        while self._successes and self._successes[0] <= now - span:
            self._successes.popleft()

    def on_success(self) -> None:
        """Additive increase: `increase_fraction` of the ceiling per second of successes."""
        self.on_done()
        now = self._now()
        self._accepted += 1
        self._successes.append(now)
        self._forget_successes(now, 1.0)
        if self._rate < self._ceiling:
            per_second = max(self._ceiling * self._increase_fraction, 0.5)
            if self._rate >= 1.0 and self._near_last_throttle():
                per_second /= CAUTIOUS_SLOWDOWN
            step = per_second / max(self._rate, 1.0)
            self._set_rate(min(self._ceiling, self._rate + step))

    def on_done(self) -> None:
        """A granted call has completed, whatever its outcome: the start-up gate opens."""
        if self._warm:
            return
        self._warm = True
        now = self._now()
        if self._warm_by is not None and now < self._warm_by:
            self._not_before = max(self._not_before, now)  # the schedule starts from here
        self._pump()

    def _near_last_throttle(self) -> bool:
        return abs(self._rate - self._throttled_at) <= CAUTIOUS_BAND * self._throttled_at

    def _set_rate(self, rate: float) -> None:
        if rate != self._rate:
            self._rate = rate
            self._changed()

    def _changed(self) -> None:
        self._on_change(self._rate)
        self._pump()

    def _due(self) -> float:
        """When the next grant may be made: its slot, unless the last second is full."""
        return max(self._scheduled(), self._window_frees(), self._held_until)

    def _scheduled(self) -> float:
        """The next slot at the current rate."""
        interval = 1.0 / self._rate
        tolerance = max(self._burst * interval, MIN_TOLERANCE)
        due = max(self._slot + interval, self._last + interval - tolerance, self._not_before)
        if not self._warm and self._warm_by is not None:
            return max(due, self._warm_by)
        return due

    def _window_frees(self) -> float:
        """When the last window holds fewer grants than it may."""
        allowed = max(1, math.ceil(self._rate - 1e-9))
        if len(self._recent) < allowed:
            return float("-inf")
        return self._recent[-allowed] + self._window

    def _pump(self) -> None:
        """Grant every waiter whose slot has come; arm the timer for the next one."""
        if not any(self._waiting):
            self._disarm()
            return
        now = self._now()
        while (lane := self._head()) is not None:
            due = self._take_slot(lane, now)
            if due is not None:
                self._arm(due)
                return
            self._waiting[lane] -= 1
            self._lanes[lane].popleft().set_result(now)
        self._disarm()

    def _take_slot(self, lane: int, now: float) -> float | None:
        """Take the next slot for a request of `lane` if it has come (None), else when it does."""
        spare = lane == URGENT and self._spare > 0 and now < self._held_until
        slot = self._scheduled() if spare else max(self._scheduled(), self._held_until)
        due = max(slot, self._window_frees())
        if due > now:
            return due
        self._slot = slot  # a wait for the window does not move the schedule
        if self._warm_by is None and not self._warm:
            self._warm_by = now + self._warmup_timeout
        self._spare -= spare
        self._count_grant(now)
        return None

    def _head(self) -> int | None:
        """The lane whose first waiter is next, dropping waiters cancelled meanwhile."""
        for lane, waiters in enumerate(self._lanes):
            while waiters and waiters[0].done():
                waiters.popleft()
            if waiters:
                return lane
        return None

    def _count_grant(self, now: float) -> None:
        self._last = max(self._last, now)
        self._recent.append(now)
        while self._recent[0] <= now - self._window:
            self._recent.popleft()

    def _grant(self, lane: int, now: float) -> None:
        self._count_grant(now)
        self._waiting[lane] -= 1
        self._lanes[lane].popleft().set_result(now)

    def _abandon(self, granted: asyncio.Future[float], lane: int) -> None:
        if granted.cancelled():
            self._waiting[lane] -= 1  # its place is dropped when it reaches the head
            return
        # Granted, but cancelled before it could run: the next waiter takes the slot now.
        head = self._head()
        if head is not None:
            if granted.result() in self._recent:
                self._recent.remove(granted.result())  # a call that was never made
            self._grant(head, self._now())
            self._pump()

    def _arm(self, when: float) -> None:
        if self._alarm is not None and self._alarm_at == when:
            return
        self._disarm()
        self._alarm = self._clock().call_at(when, self._on_alarm)
        self._alarm_at = when

    def _disarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
            self._alarm_at = float("inf")

    def _on_alarm(self) -> None:
        self._alarm = None
        self._alarm_at = float("inf")
        self._pump()

    def _now(self) -> float:
        if self._time is None:
            self._time = self._clock().time
        return self._time()

    def _clock(self) -> Timer:
        if self._timer is None:
            self._timer = _LoopTimer(asyncio.get_running_loop())
        return self._timer


def partition_share(budget: float, assigned: int, total: int) -> float:
    """This replica's part of the group budget: proportional to its share of the partitions."""
    if total <= 0:
        return budget
    return budget * min(assigned, total) / total


class _Grant:
    """A grant a task holds until its request is written; the writer runs in a task of its own,
    with a copy of the context, so the report clears the grant itself, not the variable."""

    __slots__ = ("counted_at", "limiter")

    def __init__(self, limiter: RateLimiter, counted_at: float) -> None:
        self.limiter: RateLimiter | None = limiter
        self.counted_at = counted_at


# The grant the current task holds. A task (and the tasks it starts, such as the HTTP client's
# writer) sees its own grant only.
_HELD: ContextVar[_Grant | None] = ContextVar("signout_grant", default=None)
