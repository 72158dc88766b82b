"""The error tree of a sign-out attempt and the bounded reason vocabulary (contracts.md §2).

    SignOutError                 a Cognito call (or a local check) did not sign the user out
    ├── PermanentError           can never succeed: the record is dead-lettered with `reason`
    └── RetryableError           may succeed later: back off (full jitter) and try again
        ├── ThrottledError       TooManyRequestsException: also slows this replica's rate
        └── UnreachableError     no connection to Cognito: says nothing about the request, so it
                                 never counts toward `retries_exhausted`

Classification is by Cognito error code, never by HTTP status. Unknown codes are retryable: a
request is only dead-lettered when Cognito said something that cannot change on retry.
`internal_error` is the worker's own failure on a record, never a Cognito answer.
Every message held here is already scrubbed of tokens (see `redaction.scrub`).
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    SIGNED_OUT = "signed_out"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


class Reason(StrEnum):
    # signed_out
    GLOBAL_SIGN_OUT = "global_sign_out"
    ADMIN_SIGN_OUT = "admin_sign_out"
    ADMIN_FALLBACK = "admin_fallback"
    # duplicate
    DUPLICATE_EVENT = "duplicate_event"
    # dead_lettered
    NOT_AUTHORIZED = "not_authorized"
    TOKEN_REVOKED = "token_revoked"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_INVALID = "token_invalid"
    RESOURCE_NOT_FOUND = "resource_not_found"
    USER_NOT_FOUND = "user_not_found"
    INVALID_PARAMETER = "invalid_parameter"
    PASSWORD_RESET_REQUIRED = "password_reset_required"
    USER_NOT_CONFIRMED = "user_not_confirmed"
    OPERATION_NOT_ENABLED = "operation_not_enabled"
    INVALID_PAYLOAD = "invalid_payload"
    ADMIN_DISABLED = "admin_disabled"
    RETRIES_EXHAUSTED = "retries_exhausted"
    INTERNAL_ERROR = "internal_error"
    POOL_NOT_ALLOWED = "pool_not_allowed"


# Error codes that decide locally, without a call.
LOCAL_CODE = "Local"
# The error code of a record the worker's own code failed on.
INTERNAL_CODE = "Internal"

_PERMANENT_CODES: dict[str, Reason] = {
    "NotAuthorizedException": Reason.NOT_AUTHORIZED,
    "ResourceNotFoundException": Reason.RESOURCE_NOT_FOUND,
    "UserNotFoundException": Reason.USER_NOT_FOUND,
    "InvalidParameterException": Reason.INVALID_PARAMETER,
    "PasswordResetRequiredException": Reason.PASSWORD_RESET_REQUIRED,
    "UserNotConfirmedException": Reason.USER_NOT_CONFIRMED,
    "OperationNotEnabledException": Reason.OPERATION_NOT_ENABLED,
}
THROTTLE_CODE = "TooManyRequestsException"


class SignOutError(Exception):
    """A failed attempt: `code` is Cognito's error code (or a local one), `message` scrubbed."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class PermanentError(SignOutError):
    def __init__(self, reason: Reason, code: str, message: str = "") -> None:
        super().__init__(code, message)
        self.reason = reason


class RetryableError(SignOutError):
    pass


class ThrottledError(RetryableError):
    pass


class UnreachableError(RetryableError):
    """The call never reached Cognito (connection refused, DNS, connect timeout)."""


def classify(code: str, message: str) -> SignOutError:
    """Map a Cognito error code and its (already scrubbed) message to the error tree."""
    if code == THROTTLE_CODE:
        return ThrottledError(code, message)
    reason = _PERMANENT_CODES.get(code)
    if reason is None:
        return RetryableError(code, message)
    if reason is Reason.NOT_AUTHORIZED:
        reason = _not_authorized_reason(message)
    return PermanentError(reason, code, message)


def _not_authorized_reason(message: str) -> Reason:
    """Cognito says why a token is refused only in prose ("Access Token has been revoked")."""
    text = message.lower()
    if "revoked" in text:
        return Reason.TOKEN_REVOKED
    if "expired" in text:
        return Reason.TOKEN_EXPIRED
    if "invalid" in text:
        return Reason.TOKEN_INVALID
    return Reason.NOT_AUTHORIZED
