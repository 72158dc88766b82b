"""Pure arithmetic over what was recorded: call timestamps, RSS samples, byte counters."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def busiest_window(times: Sequence[float], width: float = 1.0) -> int:
    """The most calls in any window [t, t + width) — sliding, not aligned to whole seconds."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        best = max(best, bisect.bisect_left(ordered, start + width, lo=i) - i)
    return best


def per_second(times: Sequence[float], start: float, end: float) -> list[int]:
    """Calls in each whole second from `start` (a last, partial second is left out), for a plot."""
    counts = [0] * max(int(end - start), 1)
    for at in times:
        if start <= at < start + len(counts):
            counts[int(at - start)] += 1
    return counts


def between(times: Sequence[float], start: float, end: float) -> int:
    return sum(1 for at in times if start <= at < end)


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def received_delta(first: dict[str, int], last: dict[str, int]) -> int:
    """Bytes received between two `ss` readings; a connection opened meanwhile counts whole."""
    return sum(count - first.get(conn, 0) for conn, count in last.items())


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` percentile (0 < q <= 100): a value that was measured, never between."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(int(-(-len(ordered) * q // 100)), 1)  # ceil(n * q / 100)
    return ordered[rank - 1]


def arrivals(first_seen: dict[str, float], published: dict[str, float]) -> dict[str, float | None]:
    """Per target: its first arrival at the stub minus its publish time (None: never arrived).

    The stub records a call when it arrives, before it sleeps its latency, so this is time to
    revoke with the stub's latency already left out. Both times are CLOCK_MONOTONIC, one clock for
    every process of the machine.
    """
    return {
        target: (first_seen[target] - at if target in first_seen else None)
        for target, at in published.items()
    }
