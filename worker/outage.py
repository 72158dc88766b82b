"""Whether a failing request is the request's problem or Cognito's, judged from every call made.

A retryable failure counts toward `retries_exhausted` only when some other call succeeded since
this request's previous attempt: Cognito was demonstrably answering others meanwhile. While
nothing succeeds (an outage of Cognito as a whole) failures do not count, so an outage never turns
the backlog into dead letters; the records wait in their backoff, the window fills, and the
partitions pause until Cognito answers again.
"""

from __future__ import annotations


class OutageDetector:
    def __init__(self) -> None:
        self._successes = 0
        self._failures_in_a_row = 0

    def success(self) -> None:
        self._successes += 1
        self._failures_in_a_row = 0

    def failure(self) -> None:
        self._failures_in_a_row += 1

    def mark(self) -> int:
        """A mark to compare against later with `others_succeeded_since`."""
        return self._successes

    def others_succeeded_since(self, mark: int) -> bool:
        return self._successes > mark

    @property
    def failures_in_a_row(self) -> int:
        """Consecutive retryable failures across all requests (0 after any success)."""
        return self._failures_in_a_row
