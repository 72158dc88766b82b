"""cognito.py: a Cognito that cannot be reached is `UnreachableError`, apart from its answers."""

from __future__ import annotations

import socket

import pytest
from pydantic import SecretStr

from tests.unit.fakes import make_jwt
from worker.cognito import CognitoSigner
from worker.errors import RetryableError, UnreachableError
from worker.events import TokenTarget
from worker.metrics import Metrics
from worker.settings import CognitoSettings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends: refused


async def test_a_refused_connection_is_unreachable() -> None:
    settings = CognitoSettings(endpoint_url=f"http://127.0.0.1:{_closed_port()}", timeout_seconds=2)
    target = TokenTarget(SecretStr(make_jwt(exp=4_000_000_000)))
    async with CognitoSigner(settings, Metrics(), max_connections=1) as signer:
        with pytest.raises(UnreachableError) as caught:
            await signer.sign_out(target)
    assert isinstance(caught.value, RetryableError)  # still retried, only never counted
    assert target.token.get_secret_value() not in str(caught.value)
