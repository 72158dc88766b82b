"""The PromQL of the deploy artefacts: every dashboard target and alert rule, and what they name.

The parser is deliberately small (regular expressions, quoted strings blanked first): it finds the
metric names, selector labels and grouping labels an expression uses, enough to catch a renamed
metric or label before Grafana shows "No data" or an alert silently never fires.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "signout-worker.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"

# Labels Prometheus attaches to every scraped series (Kubernetes service discovery relabelling).
TARGET_LABELS = frozenset({"namespace", "pod", "job", "instance"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SIGNOUT_NAME = re.compile(r"(?<![\w:])signout_[A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


@dataclass(frozen=True, slots=True)
class Expr:
    where: str  # e.g. "panel 'Throughput' target A" or "alert SignoutDeadLetters"
    text: str


@dataclass(frozen=True, slots=True)
class Selector:
    metric: str
    labels: frozenset[str]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in (document or dashboard())["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_exprs() -> list[Expr]:
    return [
        Expr(f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in panels()
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_exprs() -> list[Expr]:
    return [
        Expr(f"alert {rule.get('alert') or rule.get('record')}", rule["expr"])
        for rule in alert_rules()
    ]


def _blank_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def signout_names(expr: str) -> set[str]:
    """Every `signout_*` identifier outside quoted strings."""
    return set(_SIGNOUT_NAME.findall(_blank_strings(expr)))


def selectors(expr: str) -> list[Selector]:
    """`name{...}` selectors with the label names their matchers use."""
    return [
        Selector(name, frozenset(_MATCHER_LABEL.findall(body)))
        for name, body in _SELECTOR.findall(_blank_strings(expr))
    ]


def grouping_labels(expr: str) -> set[str]:
    """Labels named in `by (...)`, `without (...)`, `on (...)` and `ignoring (...)`."""
    labels: set[str] = set()
    for body in _GROUPING.findall(_blank_strings(expr)):
        labels |= {part.strip() for part in body.split(",") if part.strip()}
    return labels


def concrete(expr: str, values: dict[str, str]) -> str:
    """Grafana's variables (`$name`, `${name}`, `${name:format}`) replaced; unknown ones raise."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for the variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)
