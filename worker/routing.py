"""Where a sign-out goes: its Region, its pool, its rate budget and the role for admin calls.

Decided from the request alone, without a call. A token's Region and pool come from its `iss`
claim, parsed strictly against the two issuer forms Cognito uses; the claim only selects among the
Regions botocore knows, the host called is never taken from it. Anything else is `token_invalid`.
An admin request's Region is its pool id's prefix unless SIGNOUT_COGNITO__POOL_REGIONS says
otherwise (pools replicated to other Regions keep one id).

A token without `iss` (hand-made or legacy) goes to SIGNOUT_COGNITO__REGION with no known pool; when
SIGNOUT_COGNITO__USER_POOLS is set such a token is `pool_not_allowed`, as its pool cannot be shown
to be one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker import regions
from worker.errors import LOCAL_CODE, PermanentError, Reason
from worker.events import AdminTarget, Target, TokenTarget, claims
from worker.settings import CognitoSettings, RateSettings

# https://cognito-idp.<region>.<suffix>/<pool> or https://issuer-cognito-idp.<region>.<suffix>/<pool>:
# no port, no userinfo, no query or fragment, exactly one path segment.
_ISSUER = re.compile(
    r"https://(?:issuer-)?cognito-idp\.(?P<region>[a-z0-9-]+)\.(?P<suffix>[a-z.]+)"
    r"/(?P<pool>[A-Za-z0-9_-]+)"
)
# The budget of every account not named in SIGNOUT_COGNITO__ACCOUNTS.
SHARED_ACCOUNT = ""


@dataclass(frozen=True, slots=True)
class BudgetKey:
    """One rate budget: Cognito's quota is per account and Region."""

    account: str
    region: str


@dataclass(frozen=True, slots=True)
class Route:
    """Where one target goes. `pool_id` is None for a token without `iss`."""

    region: str
    pool_id: str | None
    budget: BudgetKey
    # The IAM role assumed for an admin call; None: the worker's own credentials.
    role_arn: str | None = None


class Router:
    """Pure: maps a target to its `Route` (or a local `PermanentError`) and a key to its budget."""

    def __init__(self, cognito: CognitoSettings, rate: RateSettings | None = None) -> None:
        self._cognito = cognito
        self._rate = rate or RateSettings()

    def route(self, target: Target) -> Route:
        if isinstance(target, TokenTarget):
            region, pool_id = token_origin(target, self._cognito.region)
            return self._routed(region, pool_id, None)
        region = self._admin_region(target)
        return self._routed(region, target.user_pool_id, self._role_for(target.user_pool_id))

    def budget_for(self, key: BudgetKey) -> float:
        """Requests per second for all replicas together, for one (account, Region)."""
        return self._rate.regions.get(key.region, self._rate.per_second)

    def _routed(self, region: str, pool_id: str | None, role_arn: str | None) -> Route:
        self._check_allowed(pool_id)
        account = self._cognito.accounts.get(pool_id or "", SHARED_ACCOUNT)
        return Route(region, pool_id, BudgetKey(account, region), role_arn)

    def _check_allowed(self, pool_id: str | None) -> None:
        allowed = self._cognito.user_pools
        if allowed is not None and pool_id not in allowed:
            raise PermanentError(Reason.POOL_NOT_ALLOWED, LOCAL_CODE, "pool is not allowed")

    def _admin_region(self, target: AdminTarget) -> str:
        pool_id = target.user_pool_id
        region = self._cognito.pool_regions.get(pool_id) or regions.pool_region(pool_id)
        if region is None or not regions.is_known(region):
            raise PermanentError(
                Reason.INVALID_PARAMETER, LOCAL_CODE, "user_pool_id names no known Region"
            )
        return region

    def _role_for(self, pool_id: str) -> str | None:
        roles = self._cognito.admin_roles
        account = self._cognito.accounts.get(pool_id)
        return roles.get(pool_id) or (roles.get(account) if account is not None else None)


def token_origin(token: str | TokenTarget, fallback_region: str) -> tuple[str, str | None]:
    """(Region, pool id) of a token from its `iss`; (fallback_region, None) when it has none."""
    issuer = (token.claims() if isinstance(token, TokenTarget) else claims(token)).get("iss")
    if issuer is None:
        return fallback_region, None
    if not isinstance(issuer, str):
        raise _invalid("token iss is not a string")
    return issuer_origin(issuer)


def issuer_origin(issuer: str) -> tuple[str, str]:
    """(Region, pool id) of a Cognito issuer URL, else `token_invalid`."""
    match = _ISSUER.fullmatch(issuer)
    if match is None:
        raise _invalid("token iss is not a Cognito user pool")
    region, pool_id = match["region"], match["pool"]
    if regions.dns_suffixes().get(region) != match["suffix"]:
        raise _invalid("token iss names no known Region")
    if regions.pool_region(pool_id) != region:
        raise _invalid("token iss pool does not match its Region")
    return region, pool_id


def _invalid(message: str) -> PermanentError:
    return PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, message)
