"""One rate limiter per budget, each (account, Region), at this replica's share of the budget.

Cognito's quota is per account and Region, so throttling in one budget slows only that budget. A
budget's limiter is created the first time a request needs it. Every limiter runs at
`per_second * assigned partitions / partitions of the subscribed topics` (the urgent topic's
partitions count like the others), recomputed on each rebalance, so the replicas of a group
together stay within each budget without talking to each other. The `region` gauge shows the sum
of this replica's current rates in that Region.

A share that grows takes effect `raise_delay` seconds (Cognito's one-second window) after the
rebalance: the partitions' previous owner made its last calls at its own share just before it gave
them up, and those calls still count at Cognito for a second. A share that shrinks applies at once.
So the replicas' shares never add up to more than the budget within any second, and a replica that
had no share (a cold start, a new replica) makes its first call a second after its assignment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from worker.metrics import Metrics
from worker.ratelimit import RateLimiter, Timer, partition_share
from worker.routing import BudgetKey

log = logging.getLogger(__name__)

BudgetOf = Callable[[BudgetKey], float]
RAISE_DELAY_SECONDS = 1.0
# Grants are counted over a window a little longer than Cognito's second: a call reaches Cognito a
# few milliseconds after its grant, not all equally late, and a quota exactly equal to the budget
# throttles the call that lands one too many in a second. 1% of the rate buys 10 ms of that.
QUOTA_WINDOW_SECONDS = 1.01


class Budgets:
    def __init__(
        self,
        budget_of: BudgetOf,
        metrics: Metrics,
        *,
        burst: float = 1.0,
        raise_delay: float = RAISE_DELAY_SECONDS,
        timer: Timer | None = None,
    ) -> None:
        self._budget_of = budget_of
        self._metrics = metrics
        self._burst = burst
        self._raise_delay = raise_delay
        self._timer = timer  # the limiters' clock: the running loop's unless given
        self._clock = timer.time if timer is not None else time.monotonic
        self._limiters: dict[BudgetKey, RateLimiter] = {}
        self._fraction = 0.0  # this replica's part of every budget: none before an assignment
        self._before = 0.0  # the part in force until `_raise_at`
        self._raise_at = float("-inf")

    def limiter(self, key: BudgetKey) -> RateLimiter:
        limiter = self._limiters.get(key)
        if limiter is None:
            now = self._clock()
            in_force = self._in_force(now)
            limiter = RateLimiter(
                self._budget_of(key) * in_force,
                burst=self._burst,
                window=QUOTA_WINDOW_SECONDS,
                timer=self._timer,
                on_change=lambda _: self._show(key.region),
            )
            self._limiters[key] = limiter
            self._apply(key, limiter, now)
            self._metrics.start_region(key.region)
            self._show(key.region)
        return limiter

    def set_share(self, assigned: int, total: int) -> None:
        """After a rebalance: this replica holds `assigned` of the `total` partitions."""
        now = self._clock()
        in_force = self._in_force(now)
        self._fraction = partition_share(1.0, assigned, total)
        if self._fraction > in_force:
            self._before, self._raise_at = in_force, now + self._raise_delay
        else:
            self._raise_at = float("-inf")
        for key, limiter in self._limiters.items():
            self._apply(key, limiter, now)
        log.info("rate share", extra={"partitions": assigned, "of": total})

    def _in_force(self, now: float) -> float:
        return self._before if now < self._raise_at else self._fraction

    def _apply(self, key: BudgetKey, limiter: RateLimiter, now: float) -> None:
        later = max(self._raise_at - now, 0.0)
        if later > 0 and self._before == 0:
            limiter.hold(later)  # no share before: nothing at all until the raise
        limiter.set_ceiling(self._budget_of(key) * self._fraction, raise_after=later)

    def _show(self, region: str) -> None:
        rates = [lim.rate for key, lim in self._limiters.items() if key.region == region]
        self._metrics.rate_limit.labels(region=region).set(sum(rates))
