"""repeats.py: one line per kind of message, then a count of the dropped ones every interval."""

from __future__ import annotations

import logging

from worker.repeats import RepeatFilter


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
