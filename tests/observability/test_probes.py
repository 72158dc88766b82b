"""`/readyz` and `/healthz` of a real worker: a real broker, Cognito over HTTP, no patching.

- Ready means joined: a rebalance held open by another member keeps the worker out of the group
  (503) until it completes (200).
- Live means progress: a Cognito call that hangs longer than the progress stall makes the worker
  not live; a Cognito outage that answers (errors, refused connections) keeps it live, because
  restarting every pod would not bring Cognito back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from devstack.cognito_stub import StubProcess, make_token
from devstack.ports import free_port
from tests.conftest import TopicFactory
from tests.integration.conftest import Names, publish, settings_for
from tests.observability.conftest import Probe, eventually, running_worker
from worker.metrics import Metrics


class HoldRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """A group member that, once asked to give up its partitions, holds the rebalance open."""

    def __init__(self) -> None:
        self.assigned = asyncio.Event()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self.holding.set()
            await self.release.wait()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned.set()


@contextlib.asynccontextmanager
async def member_holding_rebalances(bootstrap: str, names: Names) -> AsyncIterator[HoldRebalance]:
    listener = HoldRebalance()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=names.group,
        session_timeout_ms=10_000,
        rebalance_timeout_ms=60_000,
    )
    consumer.subscribe([names.topic], listener=listener)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            await listener.assigned.wait()
        yield listener
    finally:
        listener.release.set()
        await consumer.stop()


async def test_readyz_is_503_until_the_group_is_joined_then_200(
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    names: Names,
    http: aiohttp.ClientSession,
) -> None:
    names.topic = await make_topic("ready")
    settings = settings_for(kafka_bootstrap, "http://127.0.0.1:9", names)
    async with (
        member_holding_rebalances(kafka_bootstrap, names) as other,
        running_worker(settings) as worker,
    ):
        assert worker.http_port is not None
        probe = Probe(http, worker.http_port)
        status, body = await probe.get("/readyz")
        assert (status, body) == (503, {"ok": False, "detail": "not in the consumer group yet"})
        async with asyncio.timeout(30):
            await other.holding.wait()  # the worker's join is held by the broker from here on
        for _ in range(5):
            assert (await probe.get("/readyz"))[0] == 503
            assert (await probe.get("/healthz"))[0] == 200  # not ready is not dead
        other.release.set()
        await eventually(
            lambda: _status(probe, "/readyz", 200), within=30, what="/readyz 200 after the join"
        )
        assert (await probe.get("/readyz"))[1] == {"ok": True, "detail": "joined"}


async def _status(probe: Probe, path: str, expected: int) -> bool:
    return (await probe.get(path))[0] == expected


class SilentServer:
    """Accepts TCP connections, reads what comes and never answers: a hung Cognito."""

    def __init__(self) -> None:
        self.requests = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await reader.read(65536):
                self.requests.set()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()


def request_for(event_id: str) -> tuple[bytes, bytes]:
    value = {"event_id": event_id, "access_token": make_token(username=event_id)}
    return event_id.encode(), json.dumps(value).encode()


async def test_healthz_fails_when_a_record_makes_no_progress_for_the_stall(
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    names: Names,
    http: aiohttp.ClientSession,
) -> None:
    """A record stuck longer than the progress stall (2 s): here a Cognito call that hangs with a
    call timeout (30 s) above the stall, the one way a hung Cognito can look like a stuck loop."""
    stall = 2.0
    names.topic = await make_topic("stuck")
    async with SilentServer() as cognito:
        settings = settings_for(
            kafka_bootstrap,
            cognito.url,
            names,
            cognito={"timeout_seconds": 30},
            http={"progress_stall_seconds": stall},
            max_in_flight=1,
            shutdown_timeout_seconds=1,
        )
        async with running_worker(settings) as worker:
            assert worker.http_port is not None
            probe = Probe(http, worker.http_port)
            await eventually(lambda: _status(probe, "/readyz", 200), within=30, what="joined")
            assert (await probe.get("/healthz"))[0] == 200
            await publish(kafka_bootstrap, names.topic, [request_for("stuck-1")])
            async with asyncio.timeout(20):
                await cognito.requests.wait()
            assert (await probe.get("/healthz"))[0] == 200  # stuck, but not for long yet
            await eventually(lambda: _status(probe, "/healthz", 503), within=stall + 3)
            status, body = await probe.get("/healthz")
            assert status == 503
            assert body["detail"].startswith("backlog without progress for ")
            assert (await probe.get("/readyz"))[0] == 200  # ready, yet not live: restart it


@contextlib.asynccontextmanager
async def failing_cognito(kind: str) -> AsyncIterator[str]:
    """An endpoint where every call fails: refused, HTTP 500, or no answer within the timeout."""
    if kind == "refused":
        yield f"http://127.0.0.1:{free_port()}"
    elif kind == "hung":
        async with SilentServer() as server:
            yield server.url
    else:
        config = {"outage_seconds": 3600, "outage_fault": "InternalErrorException"}
        async with StubProcess(config) as stub:
            yield stub.endpoint_url


def attempts(metrics: Metrics) -> float:
    return sum(
        s.value
        for family in metrics.cognito_requests.collect()
        for s in family.samples
        if s.name.endswith("_total")
    )


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("refused", "EndpointConnectionError"),
        ("http500", "InternalErrorException"),
        ("hung", "ReadTimeoutError"),  # a hung Cognito within the call timeout is an outage too
    ],
)
async def test_healthz_stays_200_through_a_cognito_outage(
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    names: Names,
    http: aiohttp.ClientSession,
    kind: str,
    code: str,
) -> None:
    stall, watch = 2.0, 5.0
    names.topic = await make_topic("outage")
    metrics = Metrics()
    async with failing_cognito(kind) as endpoint:
        settings = settings_for(
            kafka_bootstrap,
            endpoint,
            names,
            cognito={"timeout_seconds": 0.5},
            http={"progress_stall_seconds": stall},
            max_in_flight=4,
            shutdown_timeout_seconds=1,
        )
        async with running_worker(settings, metrics) as worker:
            assert worker.http_port is not None
            probe = Probe(http, worker.http_port)
            await eventually(lambda: _status(probe, "/readyz", 200), within=30, what="joined")
            await publish(kafka_bootstrap, names.topic, [request_for(f"o-{i}") for i in range(8)])
            await eventually(lambda: _true(attempts(metrics) > 0), within=20, what="a call")
            started, calls = time.monotonic(), attempts(metrics)
            while time.monotonic() - started < watch:
                status, body = await probe.get("/healthz")
                assert status == 200, f"{time.monotonic() - started:.1f}s into the outage: {body}"
                assert metrics.inflight._value.get() > 0  # there is a backlog all along
                await asyncio.sleep(0.1)
            assert attempts(metrics) > calls + 3  # Cognito was tried all along
            assert metrics.retries.labels(code=code)._value.get() > 0
            assert not list(_dead_letters(metrics))  # an outage is not failure


async def _true(value: bool) -> bool:
    return value


def _dead_letters(metrics: Metrics) -> list[Any]:
    return [
        s
        for family in metrics.dlq_records.collect()
        for s in family.samples
        if s.name.endswith("_total") and s.value > 0
    ]
