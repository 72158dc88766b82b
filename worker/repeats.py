"""Collapsing repeated log lines: one line per change of state, then a count every so often.

aiokafka logs the same error about nine times a second while a broker is unreachable. Attached
to a handler, `RepeatFilter` lets the first line of each kind through (kind = logger, level and
message template), drops its repeats, and every `interval` seconds lets one through again with
how many were dropped. When the repeats stop (the outage ended), the count still held is not
lost: `flush` turns it into a line of its own, and `reporting()` calls it every few seconds and
once more on the way out. `logs.configure` installs the filter for the process's whole life;
`collapsed()` installs one for a block of code where none is installed yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

MAX_KINDS = 256
# How often `reporting()` prints counts that the repeats themselves no longer bring out.
REPORT_SECONDS = 5.0
# Set on the count lines `flush` makes, so that no RepeatFilter drops or counts them.
SUMMARY = "_repeat_summary"

Kind = tuple[str, int, str]


@dataclass(slots=True)
class _Held:
    shown: float
    dropped: int = 0
    last: logging.LogRecord | None = None


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
        self._kinds: dict[Kind, _Held] = {}
        # One filter on several handlers sees each record once per handler: judge it once.
        self._judged: tuple[logging.LogRecord | None, bool] = (None, True)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SUMMARY, False) or not self._ours(record.name):
            return True
        if self._judged[0] is record:
            return self._judged[1]
        verdict = self._judge(record)
        self._judged = (record, verdict)
        return verdict

    def _judge(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        held = self._kinds.get(kind)
        if held is not None and now - held.shown < self._interval:
            held.dropped += 1
            held.last = record
            return False
        if held is not None and held.dropped:
            record.msg = _counted(record.getMessage(), held.dropped, now - held.shown)
            record.args = ()
        self._remember(kind, now)
        return True

    def flush(self, everything: bool = False) -> list[logging.LogRecord]:
        """Count lines for repeats dropped and not yet reported: those whose interval is over,
        or all of them (`everything`, on the way out)."""
        now = self._clock()
        lines = []
        for held in self._kinds.values():
            if held.last is None or not (everything or now - held.shown >= self._interval):
                continue
            line = logging.makeLogRecord(held.last.__dict__)
            line.msg = _counted(held.last.getMessage(), held.dropped, now - held.shown)
            line.args = ()
            setattr(line, SUMMARY, True)
            lines.append(line)
            held.shown, held.dropped, held.last = now, 0, None
        return lines

    def _ours(self, name: str) -> bool:
        return name == self._prefix or name.startswith(self._prefix + ".")

    def _remember(self, kind: Kind, now: float) -> None:
        if len(self._kinds) >= MAX_KINDS and kind not in self._kinds:
            self._kinds.pop(next(iter(self._kinds)))  # the oldest kind first
        self._kinds.pop(kind, None)
        self._kinds[kind] = _Held(now)


def _counted(message: str, dropped: int, seconds: float) -> str:
    return f"{message} [{dropped} more like this in the last {seconds:.0f}s]"


def installed() -> list[tuple[logging.Handler, RepeatFilter]]:
    """Every RepeatFilter on the root logger's handlers, with its handler."""
    return [
        (handler, found)
        for handler in logging.getLogger().handlers
        for found in handler.filters
        if isinstance(found, RepeatFilter)
    ]


def report_held(everything: bool = False) -> None:
    """Print the counts the installed filters hold (see `RepeatFilter.flush`)."""
    for handler, repeats in installed():
        for line in repeats.flush(everything):
            handler.handle(line)


@asynccontextmanager
async def reporting(every: float = REPORT_SECONDS) -> AsyncIterator[None]:
    """While the block runs, print held counts every `every` seconds; all of them at the end."""

    async def report() -> None:
        while True:
            await asyncio.sleep(every)
            report_held()

    task = asyncio.create_task(report(), name="repeat counts")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        report_held(everything=True)


@contextmanager
def collapsed(repeat_filter: RepeatFilter | None = None) -> Iterator[RepeatFilter]:
    """Collapse repeats on every root handler that has no RepeatFilter, for the block."""
    active = repeat_filter or RepeatFilter()
    bare = [h for h in logging.getLogger().handlers if h not in dict(installed())]
    for handler in bare:
        handler.addFilter(active)
    try:
        yield active
    finally:
        for handler in bare:
            handler.removeFilter(active)
        for line in active.flush(everything=True):
            logging.getLogger(line.name).handle(line)
