"""One rate limiter per budget, each (account, Region), at this replica's share of the budget.

Cognito's quota is per account and Region, so throttling in one budget slows only that budget. A
budget's limiter is created the first time a request needs it. Every limiter runs at
`per_second * assigned partitions / partitions of the subscribed topics` (the urgent topic's
partitions count like the others), recomputed on each rebalance, so the replicas of a group
together stay within each budget without talking to each other. The `region` gauge shows the sum
of this replica's current rates in that Region.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from worker.metrics import Metrics
from worker.ratelimit import RateLimiter, partition_share
from worker.routing import BudgetKey

log = logging.getLogger(__name__)

BudgetOf = Callable[[BudgetKey], float]


class Budgets:
    def __init__(self, budget_of: BudgetOf, metrics: Metrics, *, burst: float = 1.0) -> None:
        self._budget_of = budget_of
        self._metrics = metrics
        self._burst = burst
        self._limiters: dict[BudgetKey, RateLimiter] = {}
        self._assigned = 1
        self._total = 1

    def limiter(self, key: BudgetKey) -> RateLimiter:
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = RateLimiter(
                self._share(key), burst=self._burst, on_change=lambda _: self._show(key.region)
            )
            self._limiters[key] = limiter
            self._metrics.start_region(key.region)
            self._show(key.region)
        return limiter

    def set_share(self, assigned: int, total: int) -> None:
        """After a rebalance: this replica holds `assigned` of the `total` partitions."""
        self._assigned, self._total = assigned, total
        for key, limiter in self._limiters.items():
            limiter.set_ceiling(self._share(key))
        log.info("rate share", extra={"partitions": assigned, "of": total})

    def _share(self, key: BudgetKey) -> float:
        return partition_share(self._budget_of(key), self._assigned, self._total)

    def _show(self, region: str) -> None:
        rates = [lim.rate for key, lim in self._limiters.items() if key.region == region]
        self._metrics.rate_limit.labels(region=region).set(sum(rates))
