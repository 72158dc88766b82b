"""The README's plot: the worker's calls per second over the shared-quota drain, and the budget."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from bench.measure import per_second
from bench.shared import BUDGET, OTHER_RATE, QUOTA, Timeline


def draw(timeline: Timeline, path: Path) -> None:
    start, end = timeline.start, timeline.end
    ok = per_second(timeline.worker_ok, start, end)
    throttled = per_second(timeline.worker_throttled, start, end)
    other = per_second(timeline.other, start, end)
    seconds = list(range(len(ok)))
    shared = (timeline.shared_from - start, timeline.shared_to - start)
    figure, axes = plt.subplots(figsize=(8, 3.6), dpi=100)
    axes.axvspan(*shared, color="0.92", label=f"quota {QUOTA}/s shared with another app")
    axes.step(seconds, ok, where="post", color="tab:blue", label="worker: signed out")
    axes.step(seconds, throttled, where="post", color="tab:red", label="worker: throttled")
    axes.step(
        seconds,
        other,
        where="post",
        color="tab:gray",
        label=f"other app, accepted ({OTHER_RATE:g}/s sent)",
    )
    axes.hlines(BUDGET, 0, len(ok), colors="tab:green", linestyles="--", label="budget")
    axes.hlines(
        QUOTA - OTHER_RATE,
        *shared,
        colors="tab:orange",
        linestyles=":",
        label="left for the worker",
    )
    axes.set_xlabel("seconds into the drain")
    axes.set_ylabel("calls per second (at the stub)")
    axes.set_ylim(0, BUDGET * 1.35)
    axes.legend(loc="upper right", fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
