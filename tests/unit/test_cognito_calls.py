"""cognito.py against a local endpoint: the fixed User-Agent, the timeout around each call, and the
report to the rate limiter of when each request was written."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from pydantic import SecretStr

from tests.unit.fakes import make_jwt
from worker import __version__
from worker.cognito import USER_AGENT, CognitoSigner
from worker.errors import RetryableError
from worker.events import TokenTarget
from worker.metrics import Metrics
from worker.ratelimit import RateLimiter
from worker.settings import CognitoSettings

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON = "application/x-amz-json-1.1"


class Endpoint:
    """A local Cognito stand-in: every POST goes to `answer`; the User-Agents it saw are kept, and
    when (on the event loop's clock) each request had arrived."""

    def __init__(self) -> None:
        self.agents: list[str] = []
        self.arrivals: list[float] = []
        self.answer: Answer = self._success
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.agents.append(request.headers.get("User-Agent", ""))
        self.arrivals.append(asyncio.get_running_loop().time())
        return await self.answer(request)

    async def _success(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{}", content_type=JSON)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    served = Endpoint()
    app = web.Application()
    app.router.add_post("/", served.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield served
    finally:
        await runner.cleanup()


def _target() -> TokenTarget:
    return TokenTarget(SecretStr(make_jwt(exp=4_000_000_000)))


async def test_every_call_sends_the_same_fixed_user_agent(endpoint: Endpoint) -> None:
    settings = CognitoSettings(endpoint_url=endpoint.url, timeout_seconds=5)
    async with CognitoSigner(settings, Metrics(), max_connections=2) as signer:
        for _ in range(3):
            await signer.sign_out(_target())
    assert len(endpoint.agents) == 3
    assert len(set(endpoint.agents)) == 1
    assert endpoint.agents[0].startswith(USER_AGENT)
    assert endpoint.agents[0].startswith(f"signout-worker/{__version__} aiobotocore/")
    assert " botocore/" in endpoint.agents[0]  # botocore still names itself after ours


async def test_an_answer_trickling_past_the_call_timeout_is_a_retryable_timeout(
    endpoint: Endpoint,
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.content_length = 1000
        await response.prepare(request)
        for _ in range(100):  # one byte each 0.1 s: botocore's read timeout never fires
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    endpoint.answer = trickle
    metrics = Metrics()
    settings = CognitoSettings(endpoint_url=endpoint.url, timeout_seconds=0.5)
    async with CognitoSigner(settings, metrics, max_connections=1) as signer:
        with pytest.raises(RetryableError) as caught:
            await signer.sign_out(_target())
    assert caught.value.code == "TimeoutError"
    labels = {"operation": "GlobalSignOut", "result": "TimeoutError", "region": "us-east-1"}
    assert metrics.registry.get_sample_value("signout_cognito_requests_total", labels) == 1


async def test_a_request_counts_in_the_rate_window_from_when_it_was_written(
    endpoint: Endpoint,
) -> None:
    loop = asyncio.get_running_loop()
    limiter = RateLimiter(1.0, warmup_timeout=0)  # one a second: the next slot is a second away
    settings = CognitoSettings(endpoint_url=endpoint.url, timeout_seconds=5)
    busy = [True]

    def keep_the_loop_busy(**_: object) -> None:
        """Once botocore has the request ready: a callback that blocks the loop for 0.2 s, queued
        before aiohttp's writer task (which Python 3.12 and later start at once instead)."""
        if busy[0]:
            loop.call_soon(time.sleep, 0.2)

    async with CognitoSigner(settings, Metrics(), max_connections=1) as signer:
        await signer.sign_out(_target())  # connections set up; no grant held: nothing reported
        client = await signer._client(("us-east-1", None))
        client.meta.events.register("before-send.cognito-idp", keep_the_loop_busy)
        assert limiter.try_acquire()
        granted = loop.time()
        await signer.sign_out(_target())
        free_at = loop.time() + limiter.next_free_in()
        assert free_at <= endpoint.arrivals[-1] + 1.0  # a second after the write at the latest
        if sys.version_info < (3, 12):
            assert free_at >= granted + 1.15  # the write came after the busy spell
        else:
            assert free_at < granted + 1.15  # the write came before it
        busy[0] = False
        time.sleep(0.2)  # noqa: ASYNC251 - a report of the same grant now would move it 0.2 s on
        await signer.sign_out(_target())  # no new grant: nothing is reported
        assert loop.time() + limiter.next_free_in() == pytest.approx(free_at, abs=0.1)
    assert len(endpoint.agents) == 3
