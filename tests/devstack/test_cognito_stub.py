"""The Cognito stub, driven by a real aiobotocore client (what the worker uses)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from devstack import cognito_stub
from devstack.cognito_stub import (
    ADMIN_SIGN_OUT,
    CONTENT_TYPE,
    GLOBAL_SIGN_OUT,
    TARGET_PREFIX,
    CognitoStub,
    StubConfig,
    StubProcess,
    fingerprint,
    make_token,
)

if TYPE_CHECKING:
    from types_aiobotocore_cognito_idp import CognitoIdentityProviderClient

POOL = "us-east-1_StubPool"
STUB_FILE = cognito_stub.__file__


def _client_config(read_timeout: float = 5.0) -> AioConfig:
    return AioConfig(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=64,
    )


def _client(endpoint_url: str, read_timeout: float = 5.0) -> Any:
    return get_session().create_client(
        "cognito-idp",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=_client_config(read_timeout),
    )


@pytest.fixture(scope="module")
async def stub() -> AsyncIterator[StubProcess]:
    async with StubProcess({"seed": 7}) as process:
        yield process


@pytest.fixture(autouse=True)
async def _fresh_stub(stub: StubProcess) -> None:
    await stub.reset()


@pytest.fixture(scope="module")
async def cognito(stub: StubProcess) -> AsyncIterator[CognitoIdentityProviderClient]:
    async with _client(stub.endpoint_url) as client:
        yield client


async def _error(call: Awaitable[object]) -> ClientError:
    with pytest.raises(ClientError) as info:
        await call
    return info.value


def _code(error: ClientError) -> tuple[str, str, int]:
    details = error.response["Error"]
    status = error.response["ResponseMetadata"]["HTTPStatusCode"]
    return details.get("Code", ""), details.get("Message", ""), status


async def test_global_sign_out_succeeds_and_is_recorded_by_fingerprint(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    token = make_token(sub="user-1")
    response = await cognito.global_sign_out(AccessToken=token)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    [call] = await stub.calls()
    assert (call.operation, call.target, call.result) == (GLOBAL_SIGN_OUT, fingerprint(token), "ok")
    assert call.in_flight == 1
    assert abs(call.wall - time.time()) < 5


async def test_second_sign_out_of_a_token_is_revoked(
    cognito: CognitoIdentityProviderClient,
) -> None:
    token = make_token()
    await cognito.global_sign_out(AccessToken=token)
    error = await _error(cognito.global_sign_out(AccessToken=token))
    assert _code(error) == ("NotAuthorizedException", "Access Token has been revoked", 400)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (make_token(exp_in=-60), "Access Token has expired"),
        ("not-a-jwt", "Invalid Access Token"),
        ("a.b.c", "Invalid Access Token"),
    ],
)
async def test_expired_and_malformed_tokens(
    cognito: CognitoIdentityProviderClient, token: str, message: str
) -> None:
    error = await _error(cognito.global_sign_out(AccessToken=token))
    assert _code(error) == ("NotAuthorizedException", message, 400)


async def test_admin_sign_out_and_its_errors(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    await stub.configure(known_pools=[POOL], unknown_users=["ghost"])
    await cognito.admin_user_global_sign_out(UserPoolId=POOL, Username="alice")
    await cognito.admin_user_global_sign_out(UserPoolId=POOL, Username="alice")  # idempotent
    error = await _error(cognito.admin_user_global_sign_out(UserPoolId=POOL, Username="ghost"))
    assert _code(error)[0] == "UserNotFoundException"
    error = await _error(
        cognito.admin_user_global_sign_out(UserPoolId="us-east-1_Other", Username="alice")
    )
    assert _code(error) == (
        "ResourceNotFoundException",
        "User pool us-east-1_Other does not exist.",
        400,
    )
    await stub.configure(known_users=[f"{POOL}/bob"])
    await cognito.admin_user_global_sign_out(UserPoolId=POOL, Username="bob")
    error = await _error(cognito.admin_user_global_sign_out(UserPoolId=POOL, Username="carol"))
    assert _code(error)[0] == "UserNotFoundException"
    calls = await stub.calls()
    assert [call.operation for call in calls] == [ADMIN_SIGN_OUT] * 6
    assert calls[0].target == f"{POOL}/alice"


async def test_a_sign_out_revokes_the_users_older_tokens(
    cognito: CognitoIdentityProviderClient,
) -> None:
    older = make_token(username="dave", pool=POOL, iat=time.time() - 60)
    await cognito.admin_user_global_sign_out(UserPoolId=POOL, Username="dave")
    error = await _error(cognito.global_sign_out(AccessToken=older))
    assert _code(error)[1] == "Access Token has been revoked"
    newer = make_token(username="dave", pool=POOL)
    await cognito.global_sign_out(AccessToken=newer)


async def test_quota_throttles_above_the_sliding_window(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    await stub.configure(quota_per_second=5)
    results = await asyncio.gather(
        *(cognito.global_sign_out(AccessToken=make_token()) for _ in range(12)),
        return_exceptions=True,
    )
    errors = [result for result in results if isinstance(result, ClientError)]
    assert len(errors) == 7
    assert {_code(error) for error in errors} == {
        ("TooManyRequestsException", "Rate exceeded", 400)
    }
    stats = await stub.stats()
    assert stats.counts == {"ok": 5, "TooManyRequestsException": 7}
    # Throttled calls used no quota: one second after the accepted ones, calls pass again.
    accepted = [call.mono for call in await stub.calls() if call.result == "ok"]
    await asyncio.sleep(max(accepted) - min(accepted) + 1.05)
    await cognito.global_sign_out(AccessToken=make_token())


def test_sliding_window_counts_only_accepted_requests() -> None:
    stub = CognitoStub(StubConfig(quota_per_second=3))
    times = (0.0, 0.125, 0.25, 0.375, 0.875, 1.0, 1.0625, 1.125, 1.25, 1.375)
    admitted = [stub._admit(moment) for moment in times]
    assert admitted == [True, True, True, False, False, True, False, True, True, False]


async def test_internal_error_injection_is_seeded(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    await stub.configure(internal_error_ratio=1.0)
    error = await _error(cognito.global_sign_out(AccessToken=make_token()))
    assert _code(error)[0::2] == ("InternalErrorException", 500)

    async def run() -> list[str]:
        await stub.reset()
        await stub.configure(internal_error_ratio=0.5, seed=42)
        for _ in range(30):
            await asyncio.gather(
                cognito.global_sign_out(AccessToken=make_token()), return_exceptions=True
            )
        return [call.result for call in await stub.calls()]

    first = await run()
    assert await run() == first
    assert 5 <= first.count("InternalErrorException") <= 25


async def test_outage_window(stub: StubProcess, cognito: CognitoIdentityProviderClient) -> None:
    config = await stub.configure(outage_seconds=0.8)
    error = await _error(cognito.global_sign_out(AccessToken=make_token()))
    assert _code(error)[0] == "InternalErrorException"
    await stub.configure(outage_fault="TooManyRequestsException")
    error = await _error(cognito.admin_user_global_sign_out(UserPoolId=POOL, Username="erin"))
    assert _code(error)[0] == "TooManyRequestsException"
    await asyncio.sleep(max(config["outage_end"] - time.time(), 0) + 0.05)
    await cognito.global_sign_out(AccessToken=make_token())
    # A window given as wall-clock start/end, here entirely in the future.
    now = time.time()
    await stub.configure(outage={"start": now + 60, "end": now + 120})
    await cognito.global_sign_out(AccessToken=make_token())
    results = [call.result for call in await stub.calls()]
    assert results == ["InternalErrorException", "TooManyRequestsException", "ok", "ok"]


async def test_always_failing_targets(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    bad = make_token()
    await stub.configure(
        fail_targets={fingerprint(bad): "InternalErrorException", "frank": "ForbiddenException"}
    )
    for _ in range(3):
        error = await _error(cognito.global_sign_out(AccessToken=bad))
        assert _code(error)[0] == "InternalErrorException"
    error = await _error(cognito.admin_user_global_sign_out(UserPoolId=POOL, Username="frank"))
    assert _code(error)[0] == "ForbiddenException"
    await cognito.global_sign_out(AccessToken=make_token())


async def test_latency_overlaps_concurrent_requests(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    await stub.configure(latency=200)
    started = time.perf_counter()
    await asyncio.gather(*(cognito.global_sign_out(AccessToken=make_token()) for _ in range(20)))
    elapsed = time.perf_counter() - started
    stats = await stub.stats()
    assert stats.max_in_flight >= 15
    assert 0.2 <= elapsed < 2.0
    assert {call.delay_ms for call in await stub.calls()} == {200.0}


async def test_uniform_and_normal_latency_stay_in_bounds(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    await stub.configure(latency={"dist": "uniform", "min_ms": 5, "max_ms": 15})
    await stub.configure(latency={"dist": "normal", "mean_ms": 10, "stddev_ms": 20, "max_ms": 20})
    await asyncio.gather(*(cognito.global_sign_out(AccessToken=make_token()) for _ in range(10)))
    delays = [call.delay_ms for call in await stub.calls()]
    assert all(0 <= delay <= 20 for delay in delays)
    assert len(set(delays)) > 1


async def test_connection_reset_and_close_raise_transport_errors(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    await stub.configure(reset_ratio=1.0)
    with pytest.raises(EndpointConnectionError):  # aiohttp: "Connection reset by peer"
        await cognito.global_sign_out(AccessToken=make_token())
    await stub.configure(reset_ratio=0.0, close_ratio=1.0)
    with pytest.raises(ConnectionClosedError):  # aiohttp: ServerDisconnectedError
        await cognito.global_sign_out(AccessToken=make_token())
    await stub.configure(close_ratio=0.0)
    await cognito.global_sign_out(AccessToken=make_token())
    assert [call.result for call in await stub.calls()] == ["reset", "close", "ok"]


async def test_timeout_holds_the_request_until_the_client_gives_up(stub: StubProcess) -> None:
    await stub.configure(timeout_ratio=1.0, hang_seconds=60)
    async with _client(stub.endpoint_url, read_timeout=0.3) as client:
        with pytest.raises(ReadTimeoutError):
            await client.global_sign_out(AccessToken=make_token())
    for _ in range(50):  # the client closed the connection: the handler is cancelled
        if (await stub.stats()).in_flight == 0:
            break
        await asyncio.sleep(0.02)
    stats = await stub.stats()
    assert (stats.in_flight, stats.counts) == (0, {"timeout": 1})


async def test_record_never_holds_a_token(
    stub: StubProcess, cognito: CognitoIdentityProviderClient
) -> None:
    token = make_token()
    await cognito.global_sign_out(AccessToken=token)
    await asyncio.gather(cognito.global_sign_out(AccessToken=token), return_exceptions=True)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stub.endpoint_url}/_stub/calls") as response,
    ):
        text = await response.text()
    payload_segment = token.split(".")[1]
    assert token not in text
    assert payload_segment not in text
    assert json.loads(text)["calls"][0]["target"] == fingerprint(token)
    assert [call.target for call in await stub.calls()] == [fingerprint(token)] * 2


async def test_wire_format_of_errors(stub: StubProcess) -> None:
    await stub.configure(internal_error_ratio=1.0)
    headers = {
        "X-Amz-Target": TARGET_PREFIX + GLOBAL_SIGN_OUT,
        "Content-Type": CONTENT_TYPE,
    }
    body = json.dumps({"AccessToken": make_token()})
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stub.endpoint_url}/", data=body, headers=headers) as response,
    ):
        assert response.status == 500
        assert response.headers["x-amzn-ErrorType"] == "InternalErrorException"
        assert response.headers["Content-Type"] == CONTENT_TYPE
        assert response.headers["x-amzn-RequestId"]
        data = json.loads(await response.read())
    assert data["__type"] == "InternalErrorException"
    assert data["message"]


async def test_control_api_rejects_bad_configuration(stub: StubProcess) -> None:
    with pytest.raises(ValueError, match="quota_per_second"):
        await stub.configure(quota_per_second=-1)
    with pytest.raises(ValueError, match="unknown key"):
        await stub.configure(quota=3)
    with pytest.raises(ValueError, match="outage_fault"):
        await stub.configure(outage_fault="no spaces allowed")
    await stub.configure(quota_per_second=9, latency=3)
    await stub.reset(keep_config=True)
    assert (await stub.config())["quota_per_second"] == 9
    await stub.reset()
    assert (await stub.config())["quota_per_second"] is None


def test_configuration_from_a_partial_object() -> None:
    config = StubConfig().apply(
        {"latency": {"dist": "uniform", "min_ms": 1, "max_ms": 2}, "outage_seconds": 10},
        now=1000.0,
    )
    assert (config.outage_start, config.outage_end) == (1000.0, 1010.0)
    assert config.in_outage(1005.0)
    assert not config.in_outage(1010.0)
    assert StubConfig().apply(config.to_json()) == config


async def test_bad_cli_configuration_exits_with_2() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        STUB_FILE,
        "--config-json",
        '{"bogus": 1}',
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 2
    assert stdout == b""
    assert b"bogus" in stderr


async def test_stop_kills_a_stub_that_ignores_sigterm() -> None:
    process = await StubProcess().start()
    os.kill(process.pid, signal.SIGSTOP)
    assert await process.stop(grace=0.3) == -signal.SIGKILL


async def test_stub_exits_when_its_parent_closes_stdin() -> None:
    async with StubProcess({"quota_per_second": 1}) as process:
        child = process._proc
        assert child is not None
        assert child.stdin is not None
        child.stdin.close()
        assert await asyncio.wait_for(child.wait(), 5) == 0
