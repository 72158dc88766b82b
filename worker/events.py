"""The sign-out request (contracts.md §1): its model, `decode`, the JWT pre-flight and fingerprints.

The pre-flight spends no quota: a token that is not a structurally valid JWT, or whose `exp` has
passed, is decided locally. The signature is not verified here; Cognito is the judge of validity.
Access tokens live in `SecretStr` so that no repr, log line or exception can show one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
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

SCHEMA_VERSION = 1
CLOCK_SKEW_SECONDS = 30.0
# Anything JWT-shaped: three base64url segments, the first two non-trivial.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*")
# Long opaque runs (emulators echo even garbage tokens in their messages).
_OPAQUE_RUN = re.compile(r"[A-Za-z0-9_\-+/=.]{40,}")


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


def _describe(exc: ValidationError) -> str:
    # Only field paths and pydantic's messages: never the input, which may hold a token.
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def fingerprint(token: str) -> str:
    """A stable, non-reversible name for a token: safe in logs, metrics and headers."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def scrub(message: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove tokens from text (Cognito emulators echo the token in their error messages)."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "<redacted>")
    message = _JWT_SHAPE.sub("<redacted>", message)
    return _OPAQUE_RUN.sub("<redacted>", message)


def preflight(token: str, now: float) -> None:
    """Decide locally what needs no call: malformed JWT (token_invalid) or past `exp` (expired)."""
    exp = claims(token).get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "token has no numeric exp claim")
    if exp + CLOCK_SKEW_SECONDS < now:
        raise PermanentError(Reason.TOKEN_EXPIRED, LOCAL_CODE, "token exp is in the past")


def claims(token: str) -> dict[str, Any]:
    """The unverified claims of a structurally valid JWT, else `token_invalid`."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "token is not a JWT")
    try:
        header = json.loads(_b64url(parts[0]))
        payload = json.loads(_b64url(parts[1]))
    except (ValueError, binascii.Error):
        raise PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "token is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "token is not a JWT")
    return payload


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass(frozen=True, slots=True)
class TokenTarget:
    """GlobalSignOut by access token. repr shows only the fingerprint."""

    token: SecretStr

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.token.get_secret_value())

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
    return datetime.fromtimestamp(record_timestamp_ms / 1000, tz=UTC)
