"""The dashboard and the alert rules against a real Prometheus scraping a real worker.

A worker runs in this event loop against the real broker and the Cognito stub (which, unlike
moto, can throttle); a `prometheus` server scrapes it every second with the labels Kubernetes
discovery would add (namespace, pod) and loads `alerts.yaml`. After a mixed batch (signed out,
dead-lettered for four reasons, duplicates, throttled and retried calls, an undecodable record,
requests for a second Region and one on the urgent topic), every expression of every dashboard
panel must return data through Prometheus' HTTP API, every alert rule must evaluate without error,
and the dead-letter, undecodable-record and throttling alerts must react to what happened.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Self

import aiohttp
import pytest
from aiobotocore.session import get_session

from devstack.cognito_stub import StubProcess, make_token
from devstack.moto import client_kwargs
from devstack.ports import free_port
from tests.conftest import TopicFactory
from tests.integration.conftest import Names, publish, settings_for
from tests.integration.test_undecodable import BAD_KEY, kcat_produce
from tests.observability.conftest import Probe, eventually, running_worker
from tests.observability.promql import RULES, alert_rules, concrete, dashboard_exprs
from worker.metrics import Metrics

NAMESPACE, POD, JOB = "test", "worker-0", "signout-worker"
POOL = "us-east-1_observability"
OTHER_REGION, OTHER_POOL = "eu-west-1", "eu-west-1_observability"
# Windows that cover the whole test: Prometheus has only the seconds of this test to look at.
GRAFANA = {
    "namespace": NAMESPACE,
    "pod": POD,
    "region": ".*",  # the variable's "All"
    "__rate_interval": "5m",
    "__interval": "15s",
    "__range": "5m",
    "datasource": "prometheus",
}
# Panels whose value is legitimately 0 once the batch is done: nothing waits, nothing in flight.
ZERO_AFTER_THE_BATCH = {
    "Consumer lag",
    "In flight",
    "Consumer lag by partition",
    "In flight by pod",
    "Dead-letter write errors by error",
    "Commit stall by pod",
}
LANES = {"bulk", "urgent"}
UNKNOWN = [f"ghost-{i}" for i in range(3)]
THROTTLED_USER = "busy-user"


class Prometheus:
    """`prometheus` in its own process, scraping one target every second, with our rules."""

    def __init__(self, binary: str, directory: Path, target_port: int) -> None:
        self._binary = binary
        self._directory = directory
        self._target = f"127.0.0.1:{target_port}"
        self.url = f"http://127.0.0.1:{free_port()}"
        self._proc: asyncio.subprocess.Process | None = None
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    def _config(self) -> str:
        return json.dumps(  # JSON is YAML
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "static_configs": [
                            {
                                "targets": [self._target],
                                "labels": {"namespace": NAMESPACE, "pod": POD},
                            }
                        ],
                    }
                ],
            }
        )

    async def __aenter__(self) -> Self:
        config = self._directory / "prometheus.yml"
        config.write_text(self._config())
        log = (self._directory / "prometheus.log").open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            self._binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self._directory / 'data'}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
            stdout=log,
            stderr=log,
        )
        log.close()
        await eventually(self._ready, within=30, what="prometheus /-/ready")
        return self

    async def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.returncode is not None:
            log = (self._directory / "prometheus.log").read_text()
            raise AssertionError(f"prometheus exited with {self._proc.returncode}:\n{log}")
        try:
            async with self._http.get(f"{self.url}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()

    async def api(self, path: str, **params: str) -> Any:
        async with self._http.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def value(self, expr: str) -> float | None:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None


class Batch:
    """Records with their expected (outcome, reason), keyed by event id."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []
        self.expected: Counter[tuple[str, str]] = Counter()

    def add(self, outcome: str, reason: str, value: dict[str, Any] | bytes, key: str = "") -> str:
        event_id = key or uuid.uuid4().hex
        if isinstance(value, dict):
            value = json.dumps({"event_id": event_id, **value}).encode()
        self.records.append((event_id.encode(), value))
        self.expected[(outcome, reason)] += 1
        return event_id


async def revoke(endpoint_url: str, tokens: list[str]) -> None:
    async with get_session().create_client("cognito-idp", **client_kwargs(endpoint_url)) as idp:
        for token in tokens:
            await idp.global_sign_out(AccessToken=token)


async def mixed_batch(endpoint_url: str) -> Batch:
    batch = Batch()
    revoked = [make_token(username=f"revoked-{i}") for i in range(6)]
    await revoke(endpoint_url, revoked)
    valid = [
        batch.add("signed_out", "global_sign_out", {"access_token": make_token(username=f"v-{i}")})
        for i in range(10)
    ]
    for event_id in valid[:2]:  # same event id again: finished without a call
        batch.add("duplicate", "duplicate_event", {"access_token": make_token()}, key=event_id)
    for token in revoked[:3]:
        batch.add("dead_lettered", "token_revoked", {"access_token": token})
    for i, token in enumerate(revoked[3:]):
        admin = {"user_pool_id": POOL, "username": f"revoked-{i + 3}"}
        batch.add("signed_out", "admin_fallback", {"access_token": token, **admin})
    for i in range(3):
        batch.add("signed_out", "admin_sign_out", {"user_pool_id": POOL, "username": f"a-{i}"})
    for name in UNKNOWN:
        batch.add("dead_lettered", "user_not_found", {"user_pool_id": POOL, "username": name})
    for _ in range(3):
        batch.add("dead_lettered", "token_expired", {"access_token": make_token(exp_in=-600)})
    for i in range(4):
        batch.add("dead_lettered", "invalid_payload", f"not json {i}".encode())
    for i in range(2):  # the same stub answers for every Region
        batch.add(
            "signed_out", "admin_sign_out", {"user_pool_id": OTHER_POOL, "username": f"e-{i}"}
        )
    return batch


async def urgent_and_undecodable(batch: Batch, bootstrap: str, urgent: str, topic: str) -> None:
    """One request on the urgent topic; one record whose header key is not UTF-8 on the other."""
    batch.add("signed_out", "global_sign_out", {"access_token": make_token(username="urgent")})
    await publish(bootstrap, urgent, batch.records[-1:])
    request = json.dumps({"event_id": uuid.uuid4().hex, "access_token": make_token()}).encode()
    await asyncio.to_thread(kcat_produce, bootstrap, topic, 0, b"k", request, BAD_KEY + b"=v")
    batch.expected[("dead_lettered", "invalid_payload")] += 1


def outcomes(metrics: Metrics) -> Counter[tuple[str, str]]:
    """Terminal outcomes by (outcome, reason), both lanes added up."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in metrics.events.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.value > 0:
                counts[(s.labels["outcome"], s.labels["reason"])] += int(s.value)
    return counts


async def _done(metrics: Metrics, expected: Counter[tuple[str, str]]) -> bool:
    return outcomes(metrics) == expected


def finite(result: list[dict[str, Any]]) -> list[float]:
    values = [float(series["value"][1]) for series in result]
    return [v for v in values if math.isfinite(v)]


async def throttle_once(
    stub: StubProcess, metrics: Metrics, batch: Batch, bootstrap: str, topic: str
) -> None:
    """One admin request that Cognito throttles until the worker has retried it three times."""
    await stub.configure(fail_targets={THROTTLED_USER: "TooManyRequestsException"})
    batch.add("signed_out", "admin_sign_out", {"user_pool_id": POOL, "username": THROTTLED_USER})
    await publish(bootstrap, topic, batch.records[-1:])

    async def throttles() -> float:
        return metrics.retries.labels(code="TooManyRequestsException")._value.get()

    await eventually(lambda: _at_least(throttles, 3), within=20, interval=0.01, what="throttles")
    await stub.configure(fail_targets={})


async def _at_least(read: Any, minimum: float) -> bool:
    return bool(await read() >= minimum)


async def assert_every_panel_has_data(prometheus: Prometheus) -> None:
    """Each query returns a finite value; above zero unless the panel may show an idle worker."""
    missing: list[str] = []
    for expr in dashboard_exprs():
        values = finite(await prometheus.query(concrete(expr.text, GRAFANA)))
        panel = expr.where.split("'")[1]
        if not values or (panel not in ZERO_AFTER_THE_BATCH and max(values) <= 0):
            missing.append(f"{expr.where}: {expr.text} -> {values}")
    assert not missing, "dashboard queries without data:\n" + "\n".join(missing)


async def assert_both_lanes_and_regions(prometheus: Prometheus) -> None:
    """The lane and Region panels have something to split: both lanes, both Regions."""
    lanes = await prometheus.query("sum by (lane) (signout_events_total) > 0")
    assert {s["metric"]["lane"] for s in lanes} == LANES
    calls = await prometheus.query(
        'sum by (region) (signout_cognito_requests_total{result="ok"}) > 0'
    )
    assert {s["metric"]["region"] for s in calls} == {"us-east-1", OTHER_REGION}


async def assert_every_rule_evaluates(prometheus: Prometheus) -> None:
    expected = {rule["alert"] for rule in alert_rules()}

    async def evaluated() -> list[dict[str, Any]] | None:
        groups = (await prometheus.api("rules", type="alert"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(rule["health"] != "unknown" for rule in rules) else None

    rules = await eventually(evaluated, within=10, what="every rule evaluated")
    assert {rule["name"] for rule in rules} == expected
    for rule in rules:
        assert (rule["health"], rule.get("lastError", "")) == ("ok", ""), rule


async def alerts(prometheus: Prometheus, name: str, state: str) -> list[dict[str, Any]]:
    return await prometheus.query(f'ALERTS{{alertname="{name}", alertstate="{state}"}}')


async def assert_the_alerts_reacted(prometheus: Prometheus, batch: Batch) -> None:
    dead = {reason for (outcome, reason) in batch.expected if outcome == "dead_lettered"}
    firing = await eventually(
        lambda: _reasons_firing(prometheus, dead), within=10, what="dead-letter alerts firing"
    )
    assert firing == dead
    pending = await eventually(
        lambda: alerts(prometheus, "SignoutCognitoThrottled", "pending"),
        within=10,
        what="the throttling alert pending",
    )
    assert pending[0]["metric"]["namespace"] == NAMESPACE
    undecodable = await eventually(
        lambda: alerts(prometheus, "SignoutUndecodableRecords", "firing"),
        within=10,
        what="the undecodable-record alert firing",
    )
    assert [(a["metric"]["namespace"], a["metric"]["severity"]) for a in undecodable] == [
        (NAMESPACE, "warning")
    ]
    quiet = "SignoutWorkerDown|SignoutWorkerMetricsAbsent|SignoutBacklogStalled|" + (
        "SignoutCommitsStalled|SignoutCognitoUnavailable|SignoutUrgentLatencyHigh|"
        "SignoutRateBudgetSaturated"
    )
    assert await prometheus.query(f'ALERTS{{alertname=~"{quiet}"}}') == []


async def _reasons_firing(prometheus: Prometheus, wanted: set[str]) -> set[str] | None:
    firing = await alerts(prometheus, "SignoutDeadLetters", "firing")
    reasons = {a["metric"]["reason"] for a in firing}
    return reasons if reasons >= wanted else None


async def wait_until_scraped_after(prometheus: Prometheus, batch: Batch) -> None:
    """Prometheus has the final counts, and three scrapes more (so every rate has a window)."""
    total = f'sum(signout_events_total{{pod="{POD}"}})'
    await eventually(
        lambda: _equals(prometheus.value(total), batch.expected.total()),
        within=10,
        what="Prometheus scraped the final counts",
    )
    scrapes = f'count_over_time(up{{job="{JOB}"}}[5m])'
    after = (await prometheus.value(scrapes) or 0) + 3
    await eventually(
        lambda: _at_least(lambda: prometheus.value(scrapes), after),
        within=10,
        what="three more scrapes",
    )


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def _joined(probe: Probe) -> bool:
    return (await probe.get("/readyz"))[0] == 200


@pytest.mark.timeout(90)
async def test_dashboard_and_alerts_work_on_a_real_prometheus(
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    names: Names,
    http: aiohttp.ClientSession,
    prometheus_binary: str,
    tmp_path: Path,
) -> None:
    names.topic = await make_topic("observed", partitions=2)
    urgent = await make_topic("observed-urgent", partitions=1)
    metrics = Metrics()
    async with StubProcess({"unknown_users": UNKNOWN, "latency": 2}) as stub:
        batch = await mixed_batch(stub.endpoint_url)
        settings = settings_for(
            kafka_bootstrap,
            stub.endpoint_url,
            names,
            rate={"per_second": 200},
            kafka={"urgent_topic": urgent},
        )
        async with running_worker(settings, metrics) as worker:
            assert worker.http_port is not None
            await eventually(
                lambda: _joined(Probe(http, worker.http_port or 0)), within=30, what="joined"
            )
            async with Prometheus(prometheus_binary, tmp_path, worker.http_port) as prometheus:
                scraped = f'signout_build_info{{namespace="{NAMESPACE}", pod="{POD}"}}'
                await eventually(lambda: prometheus.query(scraped), within=20, what="a scrape")

                await publish(kafka_bootstrap, names.topic, batch.records)
                await urgent_and_undecodable(batch, kafka_bootstrap, urgent, names.topic)
                await eventually(lambda: _done(metrics, batch.expected), within=30, what="batch")
                await throttle_once(stub, metrics, batch, kafka_bootstrap, names.topic)
                await eventually(lambda: _done(metrics, batch.expected), within=30, what="retry")
                await wait_until_scraped_after(prometheus, batch)

                seen = await prometheus.query("sum by (outcome, reason) (signout_events_total) > 0")
                assert {
                    (s["metric"]["outcome"], s["metric"]["reason"]): int(float(s["value"][1]))
                    for s in seen
                } == dict(batch.expected)
                await assert_both_lanes_and_regions(prometheus)
                await assert_every_rule_evaluates(prometheus)
                await assert_every_panel_has_data(prometheus)
                await assert_the_alerts_reacted(prometheus, batch)
