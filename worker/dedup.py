"""Recently seen events and recently signed-out targets, bounded in time and size. Pure.

An `event_id` is reserved when its record starts and kept once it is signed out; a permanent
failure or a cancellation releases it, so a replayed dead letter or a redelivered record runs again.
A target counts as covered when it was signed out after the new request was decided: a request
decided later (say the attacker logged in again) is never swallowed.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime


class RecentlySeen:
    def __init__(self, window_seconds: float, max_entries: int) -> None:
        self._window = window_seconds
        self._max = max_entries
        self._events: OrderedDict[str, float] = OrderedDict()  # event_id -> reserved at
        self._targets: OrderedDict[str, float] = OrderedDict()  # target key -> signed out at

    def reserve(self, event_id: str, now: float) -> bool:
        """False when the event is in flight or was signed out within the window."""
        if self._window <= 0:
            return True
        self._expire(self._events, now)
        if event_id in self._events:
            return False
        self._put(self._events, event_id, now)
        return True

    def release(self, event_id: str) -> None:
        self._events.pop(event_id, None)

    def covered(self, target_key: str, decided_at: datetime | None, now: float) -> bool:
        """True when `target_key` was signed out at or after the moment the request was decided."""
        self._expire(self._targets, now)
        signed_out_at = self._targets.get(target_key)
        if signed_out_at is None or decided_at is None:
            return False
        return decided_at.timestamp() <= signed_out_at

    def signed_out(self, target_key: str, now: float) -> None:
        if self._window > 0:
            self._targets.pop(target_key, None)
            self._put(self._targets, target_key, now)

    def _put(self, entries: OrderedDict[str, float], key: str, now: float) -> None:
        entries[key] = now
        entries.move_to_end(key)
        while len(entries) > self._max:
            entries.popitem(last=False)

    def _expire(self, entries: OrderedDict[str, float], now: float) -> None:
        while entries:
            key, at = next(iter(entries.items()))
            if now - at <= self._window:
                return
            del entries[key]
