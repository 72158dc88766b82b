"""Whether Cognito as a whole is failing, judged from every call this replica makes.

A request that keeps failing while other calls succeed is the request's problem and its attempts
count toward `retries_exhausted`; while nothing succeeds, it is an outage and they do not, so an
outage never turns the backlog into dead letters.
"""

from __future__ import annotations

from collections.abc import Callable


class OutageDetector:
    def __init__(self, clock: Callable[[], float], healthy_window_seconds: float = 15.0) -> None:
        self._clock = clock
        self._window = healthy_window_seconds
        self._last_success: float | None = None
        self._last_failure: float | None = None

    def success(self) -> None:
        self._last_success = self._clock()

    def failure(self) -> None:
        self._last_failure = self._clock()

    @property
    def healthy(self) -> bool:
        """Some call succeeded within the window."""
        return self._last_success is not None and self._clock() - self._last_success <= self._window

    @property
    def in_outage(self) -> bool:
        """Calls fail and none succeeded within the window."""
        return self._last_failure is not None and not self.healthy
