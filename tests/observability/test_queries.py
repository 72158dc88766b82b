"""Every dashboard query and alert rule names only metrics and labels the worker exports.

Names are compared with the exposition of a real `Metrics()` (every instrument exercised), so a
renamed metric or label in `worker/metrics.py` fails here, not as an empty Grafana panel or an
alert that can never fire.
"""

from __future__ import annotations

import re

import pytest

from tests.observability.exposition import exercised_metrics, exposition, sample_labels
from tests.observability.promql import (
    TARGET_LABELS,
    Expr,
    dashboard,
    dashboard_exprs,
    grouping_labels,
    panels,
    rule_exprs,
    selectors,
    signout_names,
)

ALLOWED_FOREIGN = {"up": frozenset(TARGET_LABELS)}
EXPORTED = sample_labels(exposition(exercised_metrics()))
FILTER = ('namespace=~"$namespace"', 'pod=~"$pod"')


def problems(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """What in `expr` the worker does not export: metric names, matcher and grouping labels."""
    found = [f"unknown metric {name}" for name in sorted(signout_names(expr) - exported.keys())]
    known: set[str] = set(TARGET_LABELS)
    for selector in selectors(expr):
        labels = exported.get(selector.metric, ALLOWED_FOREIGN.get(selector.metric))
        if labels is None:
            found.append(f"unknown metric {selector.metric}")
            continue
        known |= labels
        found += [
            f"{selector.metric} has no label {label}"
            for label in sorted(selector.labels - labels - TARGET_LABELS)
        ]
    for name in signout_names(expr) & exported.keys():
        known |= exported[name]
    found += [
        f"no metric of the expression has a label {label}"
        for label in sorted(grouping_labels(expr) - known)
    ]
    return sorted(set(found))


def test_the_parser_finds_names_labels_and_mistakes() -> None:
    """A self-check, so that the tests below cannot pass by finding nothing."""
    expr = (
        'sum by (reason) (rate(signout_dlq_records_total{namespace=~"$namespace", '
        'reason!="signout_fake_in_a_string"}[5m])) / on (namespace) '
        "absent(signout_build_info) and signout_event_latency_seconds_bucket > 0"
    )
    assert signout_names(expr) == {
        "signout_dlq_records_total",
        "signout_build_info",
        "signout_event_latency_seconds_bucket",
    }
    assert [(s.metric, set(s.labels)) for s in selectors(expr)] == [
        ("signout_dlq_records_total", {"namespace", "reason"})
    ]
    assert grouping_labels(expr) == {"reason", "namespace"}
    assert problems(expr, EXPORTED) == []
    assert problems("rate(signout_events[5m])", EXPORTED) == ["unknown metric signout_events"]
    assert problems('signout_retries_total{reason="x"}', EXPORTED) == [
        "signout_retries_total has no label reason"
    ]
    assert problems("sum by (outcome) (signout_dlq_records_total)", EXPORTED) == [
        "no metric of the expression has a label outcome"
    ]
    assert problems('nonexistent_metric{job="x"}', EXPORTED) == [
        "unknown metric nonexistent_metric"
    ]


def test_the_exposition_has_what_the_queries_are_checked_against() -> None:
    assert {"signout_events_total", "signout_cognito_request_duration_seconds_bucket"} <= set(
        EXPORTED
    )
    assert EXPORTED["signout_events_total"] == {"outcome", "reason", "lane"}


@pytest.mark.parametrize(
    "expr", dashboard_exprs() + rule_exprs(), ids=lambda e: e.where if isinstance(e, Expr) else ""
)
def test_every_query_names_only_what_the_worker_exports(expr: Expr) -> None:
    assert signout_names(expr.text) or selectors(expr.text), f"{expr.where}: names no metric"
    assert problems(expr.text, EXPORTED) == [], expr.text


@pytest.mark.parametrize("expr", dashboard_exprs(), ids=lambda e: e.where)
def test_every_dashboard_selector_is_filtered_by_namespace_and_pod(expr: Expr) -> None:
    bodies = re.findall(r"signout_\w+\s*\{([^}]*)\}", expr.text)
    assert bodies, f"{expr.where}: no selector with a label filter"
    assert len(bodies) == len(re.findall(r"signout_\w+", expr.text))
    for body in bodies:
        for matcher in FILTER:
            assert matcher in body, f"{expr.where}: {body!r} lacks {matcher}"


def test_every_contract_metric_is_on_the_dashboard() -> None:
    shown = {name for expr in dashboard_exprs() for name in signout_names(expr.text)}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in shown}
    for name in EXPORTED:
        if not name.endswith("_created"):
            assert re.sub(r"_(bucket|sum|count)$", "", name) in families, name


def test_the_dashboard_has_a_datasource_and_namespace_and_pod_variables() -> None:
    document = dashboard()
    assert document["schemaVersion"] >= 36
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pod"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert "label_values(signout_build_info" in variable["definition"]
        assert variable["includeAll"]
        assert variable["allValue"] == ".*"
    assert 'namespace=~"$namespace"' in variables["pod"]["definition"]
    region = variables["region"]
    assert region["type"] == "query"
    assert region["definition"].startswith("label_values(signout_cognito_requests_total{")
    assert region["definition"].endswith(", region)")
    assert (region["includeAll"], region["allValue"], region["multi"]) == (True, ".*", True)


def test_the_region_panels_follow_the_region_variable() -> None:
    """Every query of a Region-labelled metric is filtered by, and split by, the Region."""
    regional = {
        "signout_cognito_requests_total",
        "signout_cognito_request_duration_seconds_bucket",
        "signout_rate_limit_per_second",
        "signout_rate_limiter_wait_seconds_bucket",
        "signout_rate_limiter_wait_seconds_sum",
        "signout_rate_limiter_wait_seconds_count",
    }
    for expr in dashboard_exprs():
        if "Region" not in expr.where:
            continue
        assert signout_names(expr.text) <= regional, expr.where
        assert "region" in grouping_labels(expr.text), expr.where
        for body in re.findall(r"signout_\w+\s*\{([^}]*)\}", expr.text):
            assert 'region=~"$region"' in body, f"{expr.where}: {body!r}"
    titles = {p["title"] for p in panels()}
    assert {
        "Cognito calls by Region and result",
        "Budget vs actual by Region",
        "Cognito latency by Region",
        "Rate-limiter wait by Region",
    } <= titles


def test_the_lane_panels_split_by_lane() -> None:
    lane_exprs = [e for e in dashboard_exprs() if "by lane" in e.where]
    assert {e.where.split("'")[1] for e in lane_exprs} == {
        "Throughput by lane",
        "Event latency by lane (record timestamp to outcome)",
    }
    for expr in lane_exprs:
        assert "lane" in grouping_labels(expr.text), expr.where
    quantiles = {
        e.text.split(",")[0] for e in lane_exprs if e.text.startswith("histogram_quantile")
    }
    assert quantiles == {"histogram_quantile(0.5", "histogram_quantile(0.99"}


def test_every_panel_uses_the_datasource_variable_and_has_a_unique_id() -> None:
    all_panels = panels()
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    for panel in all_panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
