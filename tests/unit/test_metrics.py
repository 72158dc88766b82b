"""metrics.Children: a cached series is the metric's own series, one per set of label values."""

from __future__ import annotations

from worker.errors import Outcome, Reason
from worker.metrics import Metrics
from worker.records import Lane


def _events(metrics: Metrics, outcome: str, reason: str, lane: str) -> float | None:
    labels = {"outcome": outcome, "reason": reason, "lane": lane}
    return metrics.registry.get_sample_value("signout_events_total", labels)


def test_a_cached_series_counts_into_the_metric_by_label_order() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.events_of(Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT, Lane.BULK).inc()
    metrics.events_of(Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT, Lane.URGENT).inc()
    assert _events(metrics, "signed_out", "global_sign_out", "bulk") == 3
    assert _events(metrics, "signed_out", "global_sign_out", "urgent") == 1
    assert _events(metrics, "duplicate", "duplicate_event", "bulk") == 0


def test_a_cached_series_is_the_one_labels_returns() -> None:
    metrics = Metrics()
    cached = metrics.cognito_requests_of("GlobalSignOut", "ok", "eu-west-1")
    assert cached is metrics.cognito_requests_of("GlobalSignOut", "ok", "eu-west-1")
    cached.inc()
    labels = {"operation": "GlobalSignOut", "result": "ok", "region": "eu-west-1"}
    metrics.cognito_requests.labels(**labels).inc()
    assert metrics.registry.get_sample_value("signout_cognito_requests_total", labels) == 2
