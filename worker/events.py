"""The sign-out request (contracts.md §1): its model, `decode`, the JWT pre-flight and fingerprints.

The pre-flight spends no quota: a token that is not a structurally valid JWT, or whose `exp` has
passed, is decided locally. The signature is not verified here; Cognito is the judge of validity.
Access tokens live in `SecretStr` so that no repr, log line or exception can show one.
`decode` and `preflight` are total: any input ends in a `PermanentError` or a result, never in
another exception (deep nesting, numbers past float or digit limits, lone surrogates, NaN).
"""

from __future__ import annotations

import binascii
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from worker.errors import LOCAL_CODE, PermanentError, Reason
from worker.redaction import Fingerprint, fingerprint

SCHEMA_VERSION = 1
CLOCK_SKEW_SECONDS = 30.0
# A JWT in compact form is three base64url segments, nothing else (fullmatch: linear, ASCII only).
_JWT = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
# What a pre-flight can meet in a token's JSON segments besides malformed base64 or JSON.
_UNREADABLE = (ValueError, binascii.Error, RecursionError, OverflowError, UnicodeError)


class SignOutRequest(BaseModel):
    """A request to sign one user out of every device (schema version 1)."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="SignOutRequest")

    event_id: str = Field(min_length=1, max_length=128, description="Idempotency key, e.g. a UUID")
    access_token: SecretStr | None = Field(
        None, description="The user's access token (a JWT): sign out via GlobalSignOut"
    )
    user_pool_id: str | None = Field(
        None, min_length=1, max_length=55, description="With username: AdminUserGlobalSignOut"
    )
    username: str | None = Field(None, min_length=1, max_length=128)
    reason: str | None = Field(None, max_length=256, description="Free text from the tool")
    source: str | None = Field(None, max_length=128, description="Which tool sent it")
    requested_at: AwareDatetime | None = Field(None, description="When the tool decided")

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.user_pool_id is None) != (self.username is None):
            raise ValueError("user_pool_id and username go together")
        if self.access_token is None and self.user_pool_id is None:
            raise ValueError("needs access_token or user_pool_id + username")
        return self

    @property
    def token(self) -> str | None:
        return None if self.access_token is None else self.access_token.get_secret_value()


def json_schema() -> dict[str, Any]:
    schema = SignOutRequest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["x-schema-version"] = SCHEMA_VERSION
    return schema


def decode(value: bytes | None) -> SignOutRequest:
    """Parse a record value; anything unusable is a permanent `invalid_payload`."""
    if value is None:
        raise PermanentError(Reason.INVALID_PAYLOAD, LOCAL_CODE, "empty record value")
    try:
        return SignOutRequest.model_validate_json(value)
    except ValidationError as exc:
        raise PermanentError(Reason.INVALID_PAYLOAD, LOCAL_CODE, _describe(exc)) from None
    except (ValueError, RecursionError, OverflowError, MemoryError) as exc:
        # Input the parser could not hold: still the publisher's problem, never the worker's.
        message = f"value could not be parsed ({type(exc).__name__})"
        raise PermanentError(Reason.INVALID_PAYLOAD, LOCAL_CODE, message) from None


def _describe(exc: ValidationError) -> str:
    # Only field paths and pydantic's messages: never the input, which may hold a token.
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def preflight(token: str | TokenTarget, now: float) -> None:
    """Decide locally what needs no call: malformed JWT (token_invalid) or past `exp` (expired)."""
    payload = token.claims() if isinstance(token, TokenTarget) else claims(token)
    if _expiry(payload.get("exp")) + CLOCK_SKEW_SECONDS < now:
        raise PermanentError(Reason.TOKEN_EXPIRED, LOCAL_CODE, "token exp is in the past")


def _expiry(exp: object) -> float:
    """`exp` as finite seconds, else `token_invalid` (json.loads accepts NaN and Infinity)."""
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        try:
            seconds = float(exp)
        except OverflowError:  # an integer past any float: no real token carries one
            seconds = math.inf
        if math.isfinite(seconds):
            return seconds
    raise PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "token has no finite numeric exp claim")


def claims(token: str) -> dict[str, Any]:
    """The unverified claims of a structurally valid JWT, else `token_invalid`."""
    if _JWT.fullmatch(token) is None:  # also keeps non-ASCII (and surrogates) out of the call
        raise PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "token is not a JWT")
    parts = token.split(".")
    try:
        header = json.loads(_b64url(parts[0]))
        payload = json.loads(_b64url(parts[1]))
    except _UNREADABLE:
        raise PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "token is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "token is not a JWT")
    return payload


def _b64url(segment: str) -> bytes:
    """base64.urlsafe_b64decode without its layers (twice per token, once per sign-out)."""
    padded = (segment + "=" * (-len(segment) % 4)).encode("ascii")
    return binascii.a2b_base64(padded.translate(_URLSAFE))


_URLSAFE = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True, slots=True)
class TokenTarget:
    """GlobalSignOut by access token. repr shows only the fingerprint."""

    token: SecretStr
    # Hashed once: dedup, the outcome line and the dead letter each name the target.
    fingerprint: Fingerprint = field(init=False, repr=False, compare=False)
    # Decoded once, on first use: the expiry check and the routing both read them.
    _claims: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint(self.token.get_secret_value()))

    def claims(self) -> dict[str, Any]:
        """The token's unverified claims (`claims`), else `token_invalid`."""
        if self._claims is None:
            object.__setattr__(self, "_claims", claims(self.token.get_secret_value()))
        return self._claims  # type: ignore[return-value]

    @property
    def key(self) -> str:
        return "token:" + self.fingerprint


@dataclass(frozen=True, slots=True)
class AdminTarget:
    """AdminUserGlobalSignOut by user pool and username."""

    user_pool_id: str
    username: str

    @property
    def key(self) -> str:
        return f"admin:{self.user_pool_id}/{self.username}"


Target = TokenTarget | AdminTarget


def request_time(request: SignOutRequest, record_timestamp_ms: int | None) -> datetime | None:
    """When the decision was made: `requested_at`, else the record's timestamp."""
    if request.requested_at is not None:
        return request.requested_at
    if record_timestamp_ms is None or record_timestamp_ms < 0:
        return None
    try:
        return datetime.fromtimestamp(record_timestamp_ms / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):  # a producer-set time past year 9999
        return None
