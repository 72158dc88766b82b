"""A token bucket whose rate can change at run time, with additive-increase/multiplicative-decrease.

Every Cognito attempt, first or retry, takes one token. The ceiling is this replica's share of the
group budget (set on every rebalance). On TooManyRequests someone else is using the account's
quota: the current rate drops by `decrease_factor` (at most once per `decrease_interval`, so one
burst of throttles counts once) and climbs back by `increase_fraction` of the ceiling per second,
never above the ceiling. Waiters are served first come, first served (an asyncio.Lock is FIFO).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

MIN_RATE = 0.1


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        decrease_factor: float = 0.75,
        decrease_interval: float = 1.0,
        increase_fraction: float = 0.05,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        on_change: Callable[[float], None] = lambda rate: None,
    ) -> None:
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        self._burst = burst
        self._decrease = decrease_factor
        self._decrease_interval = decrease_interval
        self._increase_fraction = increase_fraction
        self._last_decrease = float("-inf")
        self._ceiling = max(rate, MIN_RATE)
        self._rate = self._ceiling
        self._tokens = burst
        self._updated = self._clock()
        self._lock = asyncio.Lock()
        self._on_change = on_change
        on_change(self._rate)

    @property
    def rate(self) -> float:
        """The current rate (tokens per second)."""
        return self._rate

    @property
    def ceiling(self) -> float:
        return self._ceiling

    def set_ceiling(self, rate: float) -> None:
        """A new share of the budget (after a rebalance); the current rate follows at most."""
        self._refill()
        at_full_rate = self._rate >= self._ceiling
        self._ceiling = max(rate, MIN_RATE)
        self._rate = self._ceiling if at_full_rate else min(self._rate, self._ceiling)
        self._on_change(self._rate)

    def on_throttled(self) -> None:
        """Multiplicative decrease, once per interval however many throttles arrive in it."""
        now = self._clock()
        if now - self._last_decrease < self._decrease_interval:
            return
        self._refill()
        self._last_decrease = now
        self._rate = max(self._rate * self._decrease, MIN_RATE)
        self._tokens = min(self._tokens, 0.0)
        self._on_change(self._rate)

    def on_success(self) -> None:
        """Additive increase: `increase_fraction` of the ceiling per second of successes."""
        if self._rate < self._ceiling:
            self._refill()
            step = max(self._ceiling * self._increase_fraction, 0.5) / max(self._rate, 1.0)
            self._rate = min(self._ceiling, self._rate + step)
            self._on_change(self._rate)

    async def acquire(self) -> float:
        """Wait for one token; returns the seconds waited."""
        started = self._clock()
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return self._clock() - started
                await self._sleep((1.0 - self._tokens) / self._rate)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now


def partition_share(budget: float, assigned: int, total: int) -> float:
    """This replica's part of the group budget: proportional to its share of the partitions."""
    if total <= 0:
        return budget
    return budget * min(assigned, total) / total
