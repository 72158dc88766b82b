"""Prometheus instruments (contracts.md §8) on an injectable registry. No label carries a secret."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker import __version__

_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
_EVENT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "signout_events", "Records by terminal outcome", ["outcome", "reason"], registry=r
        )
        self.cognito_requests = Counter(
            "signout_cognito_requests",
            "Cognito calls by operation and result (ok or the error code)",
            ["operation", "result"],
            registry=r,
        )
        self.cognito_duration = Histogram(
            "signout_cognito_request_duration_seconds",
            "Cognito call latency",
            ["operation"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.event_latency = Histogram(
            "signout_event_latency_seconds",
            "Record timestamp to terminal outcome",
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
        self.inflight = Gauge("signout_inflight_events", "Records being worked on", registry=r)
        self.rate_limit = Gauge(
            "signout_rate_limit_per_second", "This replica's current request budget", registry=r
        )
        self.limiter_wait = Histogram(
            "signout_rate_limiter_wait_seconds",
            "Time an attempt waited for a rate-limit token",
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
        self.build_info = Gauge("signout_build_info", "Build information", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
