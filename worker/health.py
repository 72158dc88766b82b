"""Liveness and readiness, judged from what the consume loop reports. Pure; the clock is injected.

Live means the loop keeps polling and, when there is lag, keeps making progress (records finishing
or Cognito attempts being made). Neither a Kafka nor a Cognito outage makes the worker "not live":
restarting every pod during an outage would only add a rebalance storm to it. One partition whose
commit point stands still while records wait behind it, as others finish, is a stuck worker too
(a restart redelivers it); a dead-letter topic that refuses writes is not (it makes the worker not
ready instead, so the stall is visible without a restart loop). Ready means the consumer joined its
group, can write dead letters and has not begun to shut down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: str


class Health:
    def __init__(
        self,
        clock: Callable[[], float],
        poll_stall_seconds: float = 60.0,
        progress_stall_seconds: float = 120.0,
    ) -> None:
        self._clock = clock
        self._poll_stall = poll_stall_seconds
        self._progress_stall = progress_stall_seconds
        now = clock()
        self._last_poll = now
        self._last_progress = now
        self._last_finish = float("-inf")
        self._commit_stall = 0.0
        self._dead_letters_failing = False
        self._backlog = False
        self._joined = False
        self._stopping = False

    def polled(self, backlog: bool) -> None:
        """The loop polled; `backlog` says whether work is waiting (in flight or lag)."""
        now = self._clock()
        self._last_poll = now
        if not self._backlog and backlog:
            self._last_progress = now  # a stall is measured from when work appeared
        self._backlog = backlog

    def progressed(self) -> None:
        self._last_progress = self._clock()

    def record_finished(self) -> None:
        now = self._clock()
        self._last_progress = now
        self._last_finish = now

    def commit_stalled(self, seconds: float) -> None:
        """How long the most stuck partition's commit point has stood still with records waiting."""
        self._commit_stall = seconds

    def dead_letters_failing(self, failing: bool) -> None:
        self._dead_letters_failing = failing

    def joined(self, joined: bool) -> None:
        self._joined = joined

    def stopping(self) -> None:
        self._stopping = True

    def liveness(self) -> Verdict:
        now = self._clock()
        if now - self._last_poll > self._poll_stall:
            return Verdict(False, f"no poll for {now - self._last_poll:.0f}s")
        if self._backlog and now - self._last_progress > self._progress_stall:
            return Verdict(False, f"backlog without progress for {now - self._last_progress:.0f}s")
        if self._partition_stuck(now):
            return Verdict(False, f"a partition's commit point stuck for {self._commit_stall:.0f}s")
        return Verdict(True, "polling")

    def _partition_stuck(self, now: float) -> bool:
        others_finish = now - self._last_finish <= self._progress_stall
        stuck = self._commit_stall > self._progress_stall
        return stuck and others_finish and not self._dead_letters_failing

    def readiness(self) -> Verdict:
        if self._stopping:
            return Verdict(False, "shutting down")
        if not self._joined:
            return Verdict(False, "not in the consumer group yet")
        if self._dead_letters_failing:
            return Verdict(False, "dead letters cannot be written")
        return Verdict(True, "joined")
