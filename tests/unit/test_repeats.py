"""repeats.py: one line per kind of message, then a count of the dropped ones every interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from worker.repeats import RepeatFilter, collapsed, reporting


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_are_dropped_and_counted_once_per_interval() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval=10, clock=clock)
    passed = []
    for second in range(25):
        clock.now = float(second)
        for _ in range(9):  # aiokafka's rate while a broker is down
            line = record("aiokafka.client", 'Unable connect to "%s:%s": %s', "k1", 9092, "refused")
            if repeats.filter(line):
                passed.append(line.getMessage())
    assert passed == [
        'Unable connect to "k1:9092": refused',
        'Unable connect to "k1:9092": refused [89 more like this in the last 10s]',
        'Unable connect to "k1:9092": refused [89 more like this in the last 10s]',
    ]


def test_a_new_kind_of_line_passes_at_once() -> None:
    repeats = RepeatFilter(interval=60, clock=Clock())
    assert repeats.filter(record("aiokafka.client", "Unable connect to %s", "k1"))
    assert not repeats.filter(record("aiokafka.client", "Unable connect to %s", "k2"))
    assert repeats.filter(record("aiokafka.conn", "Connection closed"))
    assert repeats.filter(record("aiokafka.client", "Unable connect to %s", "k1", level=30))


def test_other_loggers_are_left_alone() -> None:
    repeats = RepeatFilter(interval=60, clock=Clock())
    assert all(repeats.filter(record("worker.consumer", "same line")) for _ in range(5))
    assert all(repeats.filter(record("aiokafkax", "same line")) for _ in range(5))


def test_a_count_held_when_the_repeats_stop_is_flushed_once_its_interval_is_over() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval=10, clock=clock)
    for tenth in range(30):  # a 3 s outage, then silence
        clock.now = tenth / 10
        repeats.filter(record("aiokafka.client", "Unable connect to %s", "k1"))
    clock.now = 9.0
    assert repeats.flush() == []  # the interval is not over: the count may still grow
    clock.now = 10.0
    (line,) = repeats.flush()
    assert line.getMessage() == "Unable connect to k1 [29 more like this in the last 10s]"
    assert (line.name, line.levelno) == ("aiokafka.client", logging.ERROR)
    assert repeats.filter(line)  # a count line is never itself collapsed
    clock.now = 30.0
    assert repeats.flush() == []  # reported once


def test_everything_held_is_flushed_on_the_way_out() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval=60, clock=clock)
    for _ in range(4):
        repeats.filter(record("aiokafka.conn", "Connection closed"))
    repeats.filter(record("aiokafka.client", "Metadata fetch failed"))  # shown, nothing held
    clock.now = 1.0
    assert [r.getMessage() for r in repeats.flush(everything=True)] == [
        "Connection closed [3 more like this in the last 1s]"
    ]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def root_handler() -> Iterator[ListHandler]:
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = ListHandler()
    root.handlers[:] = [handler]
    try:
        yield handler
    finally:
        root.handlers[:] = saved


async def test_reporting_prints_held_counts_while_running_and_at_the_end(
    root_handler: ListHandler,
) -> None:
    clock = Clock()
    root_handler.addFilter(RepeatFilter(interval=1, clock=clock))
    log = logging.getLogger("aiokafka.client")
    async with reporting(every=0.01):
        for _ in range(3):
            log.error("Unable connect to %s", "k1")
        clock.now = 1.0
        for _ in range(50):  # the reporter runs meanwhile
            await asyncio.sleep(0.01)
            if len(root_handler.lines) > 1:
                break
        assert root_handler.lines == [
            "Unable connect to k1",
            "Unable connect to k1 [2 more like this in the last 1s]",
        ]
        log.error("Unable connect to %s", "k1")
    assert root_handler.lines[2:] == ["Unable connect to k1 [1 more like this in the last 0s]"]


def test_collapsed_adds_no_second_filter_and_flushes_its_own(root_handler: ListHandler) -> None:
    log = logging.getLogger("aiokafka.client")
    with collapsed():
        for _ in range(3):
            log.error("Unable connect")
    assert root_handler.lines == [
        "Unable connect",
        "Unable connect [2 more like this in the last 0s]",
    ]
    assert root_handler.filters == []
    lifelong = RepeatFilter()
    root_handler.addFilter(lifelong)
    with collapsed():
        assert root_handler.filters == [lifelong]
