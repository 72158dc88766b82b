"""Prometheus instruments (contracts.md §8) on an injectable registry. No label carries a secret.

Series of the bounded vocabularies (outcomes, reasons, operations, throttling) exist from the start
at 0: a series born at its first increment has no earlier sample, so `rate()`/`increase()` would
not see that increment (the first dead letter after a start would never alert).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from worker import __version__
from worker.errors import THROTTLE_CODE, Outcome, Reason
from worker.records import Lane

# The `operation` label's values: Cognito's operation names (cognito.py calls exactly these).
OPERATIONS = ("GlobalSignOut", "AdminUserGlobalSignOut")
_SIGNED_OUT = (Reason.GLOBAL_SIGN_OUT, Reason.ADMIN_SIGN_OUT, Reason.ADMIN_FALLBACK)
_DUPLICATE = (Reason.DUPLICATE_EVENT,)
DEAD_LETTER_REASONS = tuple(r for r in Reason if r not in (*_SIGNED_OUT, *_DUPLICATE))
OUTCOME_REASONS: dict[Outcome, tuple[Reason, ...]] = {
    Outcome.SIGNED_OUT: _SIGNED_OUT,
    Outcome.DUPLICATE: _DUPLICATE,
    Outcome.DEAD_LETTERED: DEAD_LETTER_REASONS,
}

# The `error` label of failed dead-letter writes: exception class names, anything else is "other".
DLQ_WRITE_ERRORS = (
    "MessageSizeTooLargeError",
    "RecordListTooLargeError",
    "RecordTooLargeError",
    "OutOfOrderSequenceNumber",
    "TopicAuthorizationFailedError",
    "ClusterAuthorizationFailedError",
    "InvalidTopicError",
    "UnknownTopicOrPartitionError",
    "PolicyViolationError",
    "NotEnoughReplicasError",
    "KafkaTimeoutError",
    "KafkaConnectionError",
    "ProducerClosed",
    "other",
)

_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
_EVENT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """The labelled series of one metric, each looked up once (`labels()` costs microseconds and
    the per-record instruments are touched several times per record). Values go in the order of
    the metric's label names. The label vocabularies are bounded, so is this cache."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """`regions`: the Regions whose series start at 0 (others start on `start_region`)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, regions: Iterable[str] = ()
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "signout_events",
            "Records by terminal outcome and lane",
            ["outcome", "reason", "lane"],
            registry=r,
        )
        self.cognito_requests = Counter(
            "signout_cognito_requests",
            "Cognito calls by operation, result (ok or the error code) and Region",
            ["operation", "result", "region"],
            registry=r,
        )
        self.cognito_duration = Histogram(
            "signout_cognito_request_duration_seconds",
            "Cognito call latency",
            ["operation", "region"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.event_latency = Histogram(
            "signout_event_latency_seconds",
            "Record timestamp to terminal outcome, by lane",
            ["lane"],
            buckets=_EVENT_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "signout_retries", "Retried attempts by error code", ["code"], registry=r
        )
        self.dlq_records = Counter(
            "signout_dlq_records",
            "Records written to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.dlq_write_errors = Counter(
            "signout_dlq_write_errors",
            "Failed dead-letter writes by error (exception class, or other)",
            ["error"],
            registry=r,
        )
        self.undecodable = Counter(
            "signout_undecodable_records",
            "Records the Kafka client could not decode, dead-lettered with what could be read",
            registry=r,
        )
        self.inflight = Gauge("signout_inflight_events", "Records being worked on", registry=r)
        self.rate_limit = Gauge(
            "signout_rate_limit_per_second",
            "This replica's current request budget",
            ["region"],
            registry=r,
        )
        self.limiter_wait = Histogram(
            "signout_rate_limiter_wait_seconds",
            "Time an attempt waited for a rate-limit token",
            ["region"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "signout_consumer_lag",
            "High watermark minus committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "signout_assigned_partitions", "Partitions assigned to this replica", registry=r
        )
        self.last_commit = Gauge(
            "signout_last_commit_timestamp_seconds",
            "Unix time of the last successful commit",
            registry=r,
        )
        self.commit_stall = Gauge(
            "signout_commit_stall_seconds",
            "Longest time an assigned partition's commit point stood still with records behind it",
            registry=r,
        )
        self.build_info = Gauge("signout_build_info", "Build information", ["version"], registry=r)
        # The series touched on every record or call, by label values in label-name order.
        self.events_of = Children(self.events)  # outcome, reason, lane
        self.event_latency_of = Children(self.event_latency)  # lane
        self.cognito_requests_of = Children(self.cognito_requests)  # operation, result, region
        self.cognito_duration_of = Children(self.cognito_duration)  # operation, region
        self.limiter_wait_of = Children(self.limiter_wait)  # region
        self.build_info.labels(version=__version__).set(1)
        self._start_known_series()
        for region in regions:
            self.start_region(region)

    def _start_known_series(self) -> None:
        for lane in Lane:
            self.event_latency.labels(lane=lane)
            for outcome, reasons in OUTCOME_REASONS.items():
                for reason in reasons:
                    self.events.labels(outcome=outcome, reason=reason, lane=lane)
        for reason in DEAD_LETTER_REASONS:
            self.dlq_records.labels(reason=reason)
        for error in DLQ_WRITE_ERRORS:
            self.dlq_write_errors.labels(error=error)
        self.retries.labels(code=THROTTLE_CODE)

    def start_region(self, region: str) -> None:
        """Series of a Region at 0 (idempotent). The label is bounded: routing admits only
        Regions botocore knows for cognito-idp."""
        for operation in OPERATIONS:
            self.cognito_duration.labels(operation=operation, region=region)
            for result in ("ok", THROTTLE_CODE):
                self.cognito_requests.labels(operation=operation, result=result, region=region)
        self.limiter_wait.labels(region=region)


def dlq_write_error(exc: BaseException) -> str:
    """The bounded `error` label of a failed dead-letter write."""
    name = type(exc).__name__
    return name if name in DLQ_WRITE_ERRORS else "other"
