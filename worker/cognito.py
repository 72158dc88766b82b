"""The Cognito adapter: `sign_out(target)` over aiobotocore, errors mapped into `errors.py`.

SDK retries are off (one attempt per call) so that every attempt passes the worker's own rate
limiter. GlobalSignOut is authorised by the token itself (botocore sends it unsigned); only
AdminUserGlobalSignOut needs AWS credentials. Error messages are scrubbed before they go anywhere.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ProxyConnectionError,
)

from worker.errors import RetryableError, SignOutError, UnreachableError, classify
from worker.events import AdminTarget, Target, TokenTarget
from worker.metrics import OPERATIONS, Metrics
from worker.redaction import scrub
from worker.settings import CognitoSettings

if TYPE_CHECKING:
    from types_aiobotocore_cognito_idp import CognitoIdentityProviderClient

GLOBAL, ADMIN = OPERATIONS
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)
# No connection was made, so the request was never seen: an outage, not this request's problem.
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ProxyConnectionError,
    aiohttp.ClientConnectorError,
    ConnectionRefusedError,
)


def operation(target: Target) -> str:
    return GLOBAL if isinstance(target, TokenTarget) else ADMIN


class CognitoSigner:
    """Owns one aiobotocore client for the worker's lifetime (`async with`)."""

    def __init__(self, settings: CognitoSettings, metrics: Metrics, max_connections: int) -> None:
        self._settings = settings
        self._metrics = metrics
        self._max_connections = max_connections
        self._stack = AsyncExitStack()
        self._client: CognitoIdentityProviderClient | None = None

    async def __aenter__(self) -> CognitoSigner:
        config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=self._settings.timeout_seconds,
            read_timeout=self._settings.timeout_seconds,
            max_pool_connections=max(self._max_connections, 10),
        )
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "cognito-idp",
                region_name=self._settings.region,
                endpoint_url=self._settings.endpoint_url,
                config=config,
            )
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def sign_out(self, target: Target) -> None:
        """One attempt. Raises a `SignOutError` subclass on any failure."""
        op = operation(target)
        started = time.perf_counter()
        result: str | None = None  # stays None when cancelled: not a Cognito result
        try:
            await asyncio.wait_for(self._call(target), self._settings.timeout_seconds + 1)
            result = "ok"
        except SignOutError as exc:
            result = exc.code
            raise
        except TimeoutError:  # a trickling answer that botocore's read timeout never ends
            result = "TimeoutError"
            raise RetryableError(result, "no answer within the call timeout") from None
        finally:
            if result is not None:
                self._metrics.cognito_requests.labels(operation=op, result=result).inc()
                self._metrics.cognito_duration.labels(operation=op).observe(
                    time.perf_counter() - started
                )

    async def _call(self, target: Target) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("CognitoSigner used outside `async with`")
        secrets = (target.token.get_secret_value(),) if isinstance(target, TokenTarget) else ()
        try:
            if isinstance(target, TokenTarget):
                await client.global_sign_out(AccessToken=target.token.get_secret_value())
            else:
                await _admin_sign_out(client, target)
        except ClientError as exc:
            raise _from_client_error(exc.response, secrets) from None
        except _UNREACHABLE as exc:
            raise UnreachableError(type(exc).__name__, scrub(str(exc), secrets)) from None
        except _TRANSPORT_ERRORS as exc:
            raise RetryableError(type(exc).__name__, scrub(str(exc), secrets)) from None


async def _admin_sign_out(client: CognitoIdentityProviderClient, target: AdminTarget) -> None:
    await client.admin_user_global_sign_out(
        UserPoolId=target.user_pool_id, Username=target.username
    )


def _from_client_error(response: Any, secrets: tuple[str, ...]) -> SignOutError:
    error = response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    message = scrub(str(error.get("Message") or ""), secrets)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "Unknown" and isinstance(status, int):
        code = f"HTTP{status}"
    return classify(code, message)
