"""Credentials of an IAM role assumed through STS, for admin calls to pools in other accounts.

The role is assumed with the worker's own credentials (RoleSessionName "signout-worker") and its
credentials are refreshed once `refresh_at` of their lifetime has passed, before they expire:
botocore refreshes them on the next signed call, one refresh at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiobotocore.credentials import AioCredentialResolver, AioRefreshableCredentials
from aiobotocore.session import AioSession, get_session
from botocore.credentials import CredentialProvider

SESSION_NAME = "signout-worker"
_METHOD = "assume-role"

Refresh = Callable[[], Awaitable[dict[str, str]]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RolePolicy:
    """How long an assumed role's credentials last and when they are renewed."""

    duration_seconds: int = 3600
    # Share of the lifetime after which the next call renews them (botocore's "advisory" refresh).
    refresh_at: float = 0.8
    clock: Callable[[], datetime] = utc_now

    @property
    def refresh_before_expiry(self) -> int:
        """Seconds before expiry from which the next call renews them."""
        return max(1, round(self.duration_seconds * (1 - self.refresh_at)))


def assume_role_refresher(
    role_arn: str, region: str, endpoint_url: str | None, duration: int
) -> Refresh:
    """A coroutine function returning fresh credentials of `role_arn` in botocore's shape."""

    async def refresh() -> dict[str, str]:
        async with get_session().create_client(
            "sts", region_name=region, endpoint_url=endpoint_url
        ) as sts:
            answer = await sts.assume_role(
                RoleArn=role_arn, RoleSessionName=SESSION_NAME, DurationSeconds=duration
            )
        credentials = answer["Credentials"]
        expiration: datetime = credentials["Expiration"]
        return {
            "access_key": str(credentials["AccessKeyId"]),
            "secret_key": str(credentials["SecretAccessKey"]),
            "token": str(credentials["SessionToken"]),
            "expiry_time": expiration.isoformat(),
        }

    return refresh


async def role_credentials(refresh: Refresh, policy: RolePolicy) -> AioRefreshableCredentials:
    """Assume the role now; the credentials renew themselves through `refresh`."""
    first = await refresh()
    before = policy.refresh_before_expiry
    return AioRefreshableCredentials(
        first["access_key"],
        first["secret_key"],
        first["token"],
        datetime.fromisoformat(first["expiry_time"]),
        refresh,
        _METHOD,
        time_fetcher=policy.clock,
        advisory_timeout=before,
        mandatory_timeout=max(1, before // 2),
    )


def session_with(credentials: AioRefreshableCredentials) -> AioSession:
    """An aiobotocore session whose clients sign with `credentials` (and nothing else)."""
    session = get_session()
    session.register_component("credential_provider", AioCredentialResolver([_Given(credentials)]))
    return session


class _Given(CredentialProvider):
    """A credential provider that hands out credentials it was given."""

    METHOD = _METHOD

    def __init__(self, credentials: AioRefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> Any:
        return self._credentials
