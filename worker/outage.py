"""Whether a failing request is the request's problem or Cognito's, judged from every call made.

A retryable failure counts toward `retries_exhausted` unless Cognito looks down as a whole: since
this request's previous failure, other requests failed too and none succeeded. So a request that
fails while others succeed (or while it is alone) is exhausted after `max_attempts`, but during an
outage nothing counts: the records wait in their backoff, the window fills, the partitions pause,
and the backlog drains once Cognito answers again. An outage never turns it into dead letters.
"""

from __future__ import annotations

from typing import NamedTuple


class Mark(NamedTuple):
    successes: int
    failures: int


class OutageDetector:
    def __init__(self) -> None:
        self._successes = 0
        self._failures = 0

    def success(self) -> None:
        self._successes += 1

    def failure(self) -> None:
        self._failures += 1

    def mark(self) -> Mark:
        """Where the counts stand; compare later with `looks_down_since`."""
        return Mark(self._successes, self._failures)

    def looks_down_since(self, mark: Mark) -> bool:
        """Others failed since `mark` and nobody succeeded: Cognito is failing as a whole."""
        return self._successes == mark.successes and self._failures > mark.failures
