"""Collapsing repeated log lines: one line per change of state, then a count every so often.

aiokafka logs the same error about nine times a second while a broker is unreachable. Attached
to a handler, `RepeatFilter` lets the first line of each kind through (kind = logger, level and
message template), drops its repeats, and every `interval` seconds lets one through again with
how many were dropped. `collapsed()` installs it on the root handlers for a block of code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MAX_KINDS = 256


class RepeatFilter(logging.Filter):
    def __init__(
        self,
        prefix: str = "aiokafka",
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefix = prefix
        self._interval = interval
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == self._prefix or record.name.startswith(self._prefix + ".")):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        shown, dropped = self._kinds.get(kind, (float("-inf"), 0))
        if now - shown < self._interval:
            self._kinds[kind] = (shown, dropped + 1)
            return False
        if dropped:
            record.msg = (
                f"{record.getMessage()} [{dropped} more like this in the last {now - shown:.0f}s]"
            )
            record.args = ()
        self._remember(kind, now)
        return True

    def _remember(self, kind: tuple[str, int, str], now: float) -> None:
        if len(self._kinds) >= MAX_KINDS and kind not in self._kinds:
            self._kinds.pop(next(iter(self._kinds)))  # the oldest kind first
        self._kinds.pop(kind, None)
        self._kinds[kind] = (now, 0)


@contextmanager
def collapsed(repeat_filter: RepeatFilter | None = None) -> Iterator[RepeatFilter]:
    """Collapse repeats on every root handler for the duration of the block."""
    active = repeat_filter or RepeatFilter()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(active)
    try:
        yield active
    finally:
        for handler in handlers:
            handler.removeFilter(active)
