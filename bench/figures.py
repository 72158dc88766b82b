"""A measured figure against its target, and the table `make bench` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    name: str
    measured: str
    target: str
    passed: bool | None  # None: shown for information, no target
    raw: dict[str, Any] = field(default_factory=dict)


def table(figures: list[Figure]) -> str:
    rows = [("figure", "measured", "target", "result")]
    rows += [(f.name, f.measured, f.target, _verdict(f.passed)) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return "info"
    return "pass" if passed else "FAIL"


def raw_numbers(figures: list[Figure]) -> str:
    lines = []
    for figure in figures:
        numbers = ", ".join(f"{key}={_shown(value)}" for key, value in figure.raw.items()) or "-"
        lines.append(f"- {figure.name}: {numbers}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
