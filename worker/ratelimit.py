"""A token bucket whose rate can change at run time, with additive-increase/multiplicative-decrease.

Every Cognito attempt, first or retry, takes one token. The ceiling is this replica's share of the
group budget (set on every rebalance); on TooManyRequests the current rate halves, and each success
climbs it back by a small step, never above the ceiling. Waiters are served first come, first
served, so a retry storm cannot starve older records.
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
        decrease_factor: float = 0.5,
        increase_per_second: float = 1.0,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        self._burst = burst
        self._decrease = decrease_factor
        self._increase = increase_per_second
        self._ceiling = max(rate, MIN_RATE)
        self._rate = self._ceiling
        self._tokens = burst
        self._updated = self._clock()
        self._lock = asyncio.Lock()

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

    def on_throttled(self) -> None:
        self._refill()
        self._rate = max(self._rate * self._decrease, MIN_RATE)
        self._tokens = min(self._tokens, 0.0)

    def on_success(self) -> None:
        """Additive increase: `increase_per_second` per second's worth of successes."""
        if self._rate < self._ceiling:
            self._refill()
            self._rate = min(self._ceiling, self._rate + self._increase / max(self._rate, 1.0))

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
