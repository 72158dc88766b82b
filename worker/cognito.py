"""The Cognito adapter: `sign_out(target, route)` over aiobotocore, errors mapped into `errors.py`.

One client per Region in use (and per assumed role for admin calls across accounts), created on
first use and closed at shutdown. The endpoint is botocore's own for the Region, or the configured
emulator's (SIGNOUT_COGNITO__ENDPOINT_URL: one URL, a URL with `{region}`, or a map Region -> URL);
the Region comes from `routing.Route`, never a host from a token.

SDK retries are off (one attempt per call) so that every attempt passes the worker's own rate
limiter. GlobalSignOut is authorised by the token itself (botocore sends it unsigned); only
AdminUserGlobalSignOut needs AWS credentials: the worker's own, or those of the role that
SIGNOUT_COGNITO__ADMIN_ROLES names for the pool. Error messages are scrubbed before use.

The clients' HTTP session (`_WireSession`) tells the rate limiter when a request's bytes are written
(`ratelimit.request_written`): aiohttp writes a body in a task of its own, which on Python 3.11 runs
only after whatever the event loop has queued before it, so a call can leave well after its grant.
"""

from __future__ import annotations

import asyncio
import platform
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiobotocore
import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ProxyConnectionError,
)

from worker import __version__
from worker.errors import RetryableError, SignOutError, UnreachableError, classify
from worker.events import AdminTarget, Target, TokenTarget
from worker.metrics import OPERATIONS, Metrics
from worker.ratelimit import request_written
from worker.redaction import scrub
from worker.roles import RolePolicy, assume_role_refresher, role_credentials, session_with
from worker.routing import Route, Router
from worker.settings import CognitoSettings

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter
    from types_aiobotocore_cognito_idp import CognitoIdentityProviderClient

GLOBAL, ADMIN = OPERATIONS
REGION_PLACEHOLDER = "{region}"
# Fixed for the process: botocore then sends it as it is (and appends "botocore/<version>") instead
# of rebuilding its own from a dozen components on every call (a sixth of the worker's CPU).
USER_AGENT = (
    f"signout-worker/{__version__} aiobotocore/{aiobotocore.__version__}"
    f" Python/{platform.python_version()}"
)
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)
# No connection was made, so the request was never seen: an outage, not this request's problem.
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ProxyConnectionError,
    aiohttp.ClientConnectorError,
    ConnectionRefusedError,
)


class _WrittenBody(aiohttp.BytesPayload):
    """A request body that reports the moment aiohttp writes it: the call leaves then."""

    async def write(self, writer: AbstractStreamWriter) -> None:
        request_written()
        await super().write(writer)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        request_written()
        await super().write_with_length(writer, content_length)


class _WireSession(AIOHTTPSession):
    """aiobotocore's HTTP session, with bodies that report when they are written."""

    async def send(self, request: Any) -> Any:  # botocore's AWSPreparedRequest
        body = request.body
        if not isinstance(body, bytes) or not body:
            return await super().send(request)
        request.body = _WrittenBody(body)
        try:
            return await super().send(request)
        finally:
            request.body = body  # the request as botocore made it, should it be sent again


def operation(target: Target) -> str:
    return GLOBAL if isinstance(target, TokenTarget) else ADMIN


def endpoint_for(settings: CognitoSettings, region: str) -> str | None:
    """The configured emulator's URL for `region`; None: botocore's own endpoint."""
    configured = settings.endpoint_url
    if isinstance(configured, dict):
        return configured.get(region)
    if configured is None:
        return None
    return configured.replace(REGION_PLACEHOLDER, region)


# A client is for one Region and one set of credentials: the worker's own (None) or a role's.
ClientKey = tuple[str, str | None]


class CognitoSigner:
    """Owns the clients, one per Region (and assumed role) in use, for its lifetime (`async with`).

    `role_policy` sets the assumed roles' lifetime and refresh point (tests shorten both).
    """

    def __init__(
        self,
        settings: CognitoSettings,
        metrics: Metrics,
        max_connections: int,
        role_policy: RolePolicy | None = None,
    ) -> None:
        self._settings = settings
        self._router = Router(settings)
        self._metrics = metrics
        self._role_policy = role_policy or RolePolicy()
        self._config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=settings.timeout_seconds,
            read_timeout=settings.timeout_seconds,
            max_pool_connections=max(max_connections, 10),
            user_agent=USER_AGENT,
            http_session_cls=_WireSession,
        )
        self._stack = AsyncExitStack()
        self._clients: dict[ClientKey, CognitoIdentityProviderClient] = {}
        self._locks: dict[ClientKey, asyncio.Lock] = {}
        self._role_sessions: dict[str, AioSession] = {}
        self._role_locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    @property
    def clients(self) -> frozenset[ClientKey]:
        """The (Region, role) pairs a client was created for."""
        return frozenset(self._clients)

    async def __aenter__(self) -> CognitoSigner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closed = True
        await self._stack.aclose()

    async def sign_out(self, target: Target, route: Route | None = None) -> None:
        """One attempt in `route.region`. Raises a `SignOutError` subclass on any failure.

        Without a route the signer routes the target itself (`routing.Router`): a target that
        cannot be routed fails with its local `PermanentError` before any call or metric.
        """
        route = route or self._router.route(target)
        op = operation(target)
        started = time.perf_counter()
        result: str | None = None  # stays None when cancelled: not a Cognito result
        try:
            # asyncio.timeout, not wait_for: no extra task per call (3.11's wait_for makes one).
            async with asyncio.timeout(self._settings.timeout_seconds + 1):
                await self._call(target, route)
            result = "ok"
        except SignOutError as exc:
            result = exc.code
            raise
        except TimeoutError:  # a trickling answer that botocore's read timeout never ends
            result = "TimeoutError"
            raise RetryableError(result, "no answer within the call timeout") from None
        finally:
            if result is not None:
                metrics, region = self._metrics, route.region
                metrics.cognito_requests_of(op, result, region).inc()
                metrics.cognito_duration_of(op, region).observe(time.perf_counter() - started)

    async def _call(self, target: Target, route: Route) -> None:
        secrets = (target.token.get_secret_value(),) if isinstance(target, TokenTarget) else ()
        try:
            if isinstance(target, TokenTarget):
                client = await self._client((route.region, None))
                await client.global_sign_out(AccessToken=target.token.get_secret_value())
            else:
                client = await self._client((route.region, route.role_arn))
                await _admin_sign_out(client, target)
        except ClientError as exc:
            raise _from_client_error(exc.response, secrets) from None
        except _UNREACHABLE as exc:
            raise UnreachableError(type(exc).__name__, scrub(str(exc), secrets)) from None
        except _TRANSPORT_ERRORS as exc:
            raise RetryableError(type(exc).__name__, scrub(str(exc), secrets)) from None

    async def _client(self, key: ClientKey) -> CognitoIdentityProviderClient:
        client = self._clients.get(key)
        if client is not None:
            return client
        # One creation per key even when its first requests arrive together.
        async with self._locks.setdefault(key, asyncio.Lock()):
            client = self._clients.get(key)
            if client is None:
                client = await self._create(key)
                self._clients[key] = client
        return client

    async def _create(self, key: ClientKey) -> CognitoIdentityProviderClient:
        if self._closed:
            raise RuntimeError("CognitoSigner used after `async with`")
        region, role_arn = key
        session = get_session() if role_arn is None else await self._role_session(role_arn, region)
        client = await self._stack.enter_async_context(
            session.create_client(
                "cognito-idp",
                region_name=region,
                endpoint_url=endpoint_for(self._settings, region),
                config=self._config,
            )
        )
        self._metrics.start_region(region)
        return client

    async def _role_session(self, role_arn: str, region: str) -> AioSession:
        """One session per role: its credentials are account-wide, shared by every Region."""
        async with self._role_locks.setdefault(role_arn, asyncio.Lock()):
            session = self._role_sessions.get(role_arn)
            if session is None:
                policy = self._role_policy
                refresh = assume_role_refresher(
                    role_arn, region, endpoint_for(self._settings, region), policy.duration_seconds
                )
                session = session_with(await role_credentials(refresh, policy))
                self._role_sessions[role_arn] = session
        return session


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
