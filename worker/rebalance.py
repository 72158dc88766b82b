"""The rebalance listener: hand revoked partitions over cleanly, take assigned ones up.

On revocation (aiokafka calls it inside the group protocol, so the whole group waits for it):
drop the partitions' buffered records, give their running records `revoke_wait` to finish, cancel
the rest (bounded), commit what finished and forget the partitions. What did not finish is
redelivered to the new owner: a duplicate is acceptable, a loss is not. On assignment: tell the
rate budget this replica's share, seed the lag and report the group joined.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from worker.committer import Committer
from worker.lag import LagMeter
from worker.window import Window, settle

log = logging.getLogger(__name__)

# Called with (partitions assigned here, partitions of the subscribed topics) after a rebalance.
AssignmentCallback = Callable[[int, int], None]


class Membership(Protocol):
    def assignment(self) -> frozenset[TopicPartition]: ...
    def partitions_for_topic(self, topic: str) -> int | None: ...


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        membership: Membership,
        window: Window,
        committer: Committer,
        lag: LagMeter,
        *,
        topics: Collection[str],
        revoke_wait: float,
        cancel_wait: float,
        on_assignment: AssignmentCallback,
        on_joined: Callable[[], None],
    ) -> None:
        self._membership = membership
        self._window = window
        self._committer = committer
        self._lag = lag
        self._topics = tuple(topics)
        self._revoke_wait = revoke_wait
        self._cancel_wait = cancel_wait
        self._on_assignment = on_assignment
        self._on_joined = on_joined

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        revoked = set(revoked)
        if not revoked:
            return
        await settle(self._window.revoke(revoked), self._revoke_wait, self._cancel_wait)
        await self._committer.commit(revoked)
        self._window.forget(revoked)
        self._committer.forget(revoked)
        self._lag.revoked(revoked)
        log.info("partitions revoked", extra={"partitions": _names(revoked)})

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        assignment = self._membership.assignment()
        self._on_assignment(len(assignment), self._topic_partitions(assignment))
        await self._lag.assigned(assigned)
        self._on_joined()
        log.info("partitions assigned", extra={"partitions": _names(assignment)})

    def _topic_partitions(self, assignment: Collection[TopicPartition]) -> int:
        counts = [self._membership.partitions_for_topic(t) for t in self._topics]
        if any(c is None for c in counts):
            return len(assignment)  # metadata not there yet: assume we hold everything
        return sum(c for c in counts if c is not None)


def _names(partitions: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{p.topic}/{p.partition}" for p in partitions)
