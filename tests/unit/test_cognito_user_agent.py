"""cognito.py: every call carries the worker's own fixed User-Agent, the same on every call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pydantic import SecretStr

from tests.unit.fakes import make_jwt
from worker import __version__
from worker.cognito import USER_AGENT, CognitoSigner
from worker.events import TokenTarget
from worker.metrics import Metrics
from worker.settings import CognitoSettings


@pytest.fixture
async def seen_agents() -> AsyncIterator[tuple[str, list[str]]]:
    """A local endpoint that answers every sign-out with success and records its User-Agent."""
    agents: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        agents.append(request.headers.get("User-Agent", ""))
        return web.Response(body=b"{}", content_type="application/x-amz-json-1.1")

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", agents
    finally:
        await runner.cleanup()


async def test_every_call_sends_the_same_fixed_user_agent(
    seen_agents: tuple[str, list[str]],
) -> None:
    endpoint, agents = seen_agents
    settings = CognitoSettings(endpoint_url=endpoint, timeout_seconds=5)
    async with CognitoSigner(settings, Metrics(), max_connections=2) as signer:
        for _ in range(3):
            await signer.sign_out(TokenTarget(SecretStr(make_jwt(exp=4_000_000_000))))
    assert len(agents) == 3
    assert len(set(agents)) == 1
    assert agents[0].startswith(USER_AGENT)
    assert agents[0].startswith(f"signout-worker/{__version__} aiobotocore/")
    assert " botocore/" in agents[0]  # botocore still names itself after ours
