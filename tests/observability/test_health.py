"""Liveness and readiness rules (`worker/health.py`) at their exact thresholds, with an injected
clock, and the HTTP endpoints that serve them (`worker/http.py`)."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from worker.health import Health
from worker.http import build_app, start_server
from worker.metrics import Metrics
from worker.settings import HttpSettings

POLL_STALL = 60.0
PROGRESS_STALL = 120.0
TICK = 0.001


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    return Health(clock, POLL_STALL, PROGRESS_STALL)


def test_a_fresh_worker_is_live_but_not_ready(health: Health) -> None:
    assert health.liveness().ok
    readiness = health.readiness()
    assert not readiness.ok
    assert readiness.detail == "not in the consumer group yet"


def test_not_live_only_after_the_poll_stall_has_passed(health: Health, clock: Clock) -> None:
    health.polled(backlog=False)
    clock.advance(POLL_STALL)
    assert health.liveness().ok
    clock.advance(TICK)
    verdict = health.liveness()
    assert not verdict.ok
    assert verdict.detail == "no poll for 60s"
    health.polled(backlog=False)
    assert health.liveness().ok


def test_a_backlog_without_progress_fails_after_the_progress_stall(
    health: Health, clock: Clock
) -> None:
    health.polled(backlog=True)
    for _ in range(int(PROGRESS_STALL)):  # the loop keeps polling; only progress is missing
        clock.advance(1.0)
        health.polled(backlog=True)
    assert health.liveness().ok
    clock.advance(TICK)
    health.polled(backlog=True)
    verdict = health.liveness()
    assert not verdict.ok
    assert verdict.detail == "backlog without progress for 120s"


def test_progress_restarts_the_stall_clock(health: Health, clock: Clock) -> None:
    health.polled(backlog=True)
    clock.advance(PROGRESS_STALL - 1)
    health.progressed()
    clock.advance(PROGRESS_STALL)
    health.polled(backlog=True)
    assert health.liveness().ok
    clock.advance(TICK)
    assert not health.liveness().ok


def test_the_stall_is_measured_from_when_work_appeared_not_from_the_last_record(
    health: Health, clock: Clock
) -> None:
    health.progressed()
    for _ in range(10):  # idle for far longer than the progress stall, polling all along
        clock.advance(POLL_STALL - 1)
        health.polled(backlog=False)
    health.polled(backlog=True)
    assert health.liveness().ok
    clock.advance(PROGRESS_STALL)
    health.polled(backlog=True)
    assert health.liveness().ok
    clock.advance(TICK)
    assert not health.liveness().ok


def test_an_idle_worker_that_polls_stays_live_forever(health: Health, clock: Clock) -> None:
    for _ in range(100):
        clock.advance(POLL_STALL)
        health.polled(backlog=False)
        assert health.liveness().ok


def test_a_cleared_backlog_is_live_again(health: Health, clock: Clock) -> None:
    health.polled(backlog=True)
    clock.advance(PROGRESS_STALL + 1)
    assert not health.liveness().ok
    health.polled(backlog=False)
    assert health.liveness().ok


def test_ready_once_joined_and_not_ready_once_stopping(health: Health) -> None:
    health.joined(True)
    assert health.readiness().ok
    health.stopping()
    verdict = health.readiness()
    assert not verdict.ok
    assert verdict.detail == "shutting down"
    assert health.liveness().ok  # draining is not dead


async def test_the_endpoints_serve_the_verdicts_and_the_exposition(
    health: Health, clock: Clock
) -> None:
    metrics = Metrics()
    metrics.inflight.set(2)
    app = build_app(metrics.registry, health)
    runner, port = await start_server(HttpSettings(host="127.0.0.1", port=0), app)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def get(path: str, accept: str = "") -> tuple[int, str, str]:
                async with http.get(base + path, headers={"Accept": accept}) as response:
                    return response.status, response.content_type, await response.text()

            assert port != 0
            assert (await get("/healthz"))[:2] == (200, "application/json")
            assert (await get("/readyz"))[0] == 503
            health.joined(True)
            assert (await get("/readyz"))[0] == 200
            clock.advance(POLL_STALL + 1)
            status, _, body = await get("/healthz")
            assert status == 503
            assert '"ok": false' in body

            status, content_type, text = await get("/metrics")
            assert (status, content_type) == (200, "text/plain")
            values = {
                s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            }
            assert values["signout_inflight_events"] == 2
            status, content_type, text = await get("/metrics", "application/openmetrics-text")
            assert (status, content_type) == (200, "application/openmetrics-text")
            assert text.endswith("# EOF\n")
    finally:
        await runner.cleanup()
