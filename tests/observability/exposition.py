"""The worker's `/metrics` exposition with every instrument exercised, and what it contains.

Label values come from the worker's own vocabulary (outcomes, reasons, operation names, error
codes) so the exposition looks like a busy replica's, not like an empty registry.
"""

from __future__ import annotations

import time
from collections import defaultdict

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.cognito import ADMIN, GLOBAL
from worker.errors import THROTTLE_CODE, Outcome, Reason
from worker.metrics import Metrics


def exercised_metrics() -> Metrics:
    m = Metrics()
    for outcome, reason, count in (
        (Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT, 120),
        (Outcome.SIGNED_OUT, Reason.ADMIN_FALLBACK, 3),
        (Outcome.DUPLICATE, Reason.DUPLICATE_EVENT, 2),
        (Outcome.DEAD_LETTERED, Reason.USER_NOT_FOUND, 1),
    ):
        m.events.labels(outcome=outcome, reason=reason, lane="bulk").inc(count)
    m.events.labels(outcome=Outcome.SIGNED_OUT, reason=Reason.ADMIN_SIGN_OUT, lane="urgent").inc()
    for operation, result in (
        (GLOBAL, "ok"),
        (GLOBAL, THROTTLE_CODE),
        (ADMIN, "ok"),
        (ADMIN, "UserNotFoundException"),
    ):
        m.cognito_requests.labels(operation=operation, result=result, region="us-east-1").inc()
        m.cognito_duration.labels(operation=operation, region="eu-west-1").observe(0.042)
    m.event_latency.labels(lane="bulk").observe(1.7)
    m.event_latency.labels(lane="urgent").observe(0.3)
    m.retries.labels(code=THROTTLE_CODE).inc()
    m.retries.labels(code="InternalErrorException").inc()
    m.dlq_records.labels(reason=Reason.USER_NOT_FOUND).inc()
    m.dlq_write_errors.labels(error="InvalidTopicError").inc()
    m.inflight.set(3)
    m.rate_limit.labels(region="us-east-1").set(20.0)
    m.limiter_wait.labels(region="us-east-1").observe(0.004)
    m.consumer_lag.labels(topic="signout.requests", partition="0").set(12)
    m.assigned_partitions.set(2)
    m.last_commit.set(time.time())
    m.commit_stall.set(4.5)
    m.undecodable.inc()
    return m


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def sample_labels(text: str) -> dict[str, set[str]]:
    """Every sample name of an exposition with the label names its samples carry."""
    labels: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)
    return dict(labels)
