"""errors.py: every Cognito error code of contracts.md §2 lands in the right branch of the tree."""

from __future__ import annotations

import pytest

from worker.errors import (
    PermanentError,
    Reason,
    RetryableError,
    SignOutError,
    ThrottledError,
    classify,
)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Access Token has been revoked", Reason.TOKEN_REVOKED),
        ("Access Token has expired", Reason.TOKEN_EXPIRED),
        ("Invalid Access Token", Reason.TOKEN_INVALID),
        ("ACCESS TOKEN HAS BEEN REVOKED", Reason.TOKEN_REVOKED),
        ("User is disabled.", Reason.NOT_AUTHORIZED),
        ("", Reason.NOT_AUTHORIZED),
    ],
)
def test_not_authorized_reason_comes_from_the_message(message: str, reason: Reason) -> None:
    error = classify("NotAuthorizedException", message)
    assert type(error) is PermanentError
    assert error.reason is reason
    assert error.code == "NotAuthorizedException"
    assert error.message == message


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("ResourceNotFoundException", Reason.RESOURCE_NOT_FOUND),
        ("UserNotFoundException", Reason.USER_NOT_FOUND),
        ("InvalidParameterException", Reason.INVALID_PARAMETER),
        ("PasswordResetRequiredException", Reason.PASSWORD_RESET_REQUIRED),
        ("UserNotConfirmedException", Reason.USER_NOT_CONFIRMED),
        ("OperationNotEnabledException", Reason.OPERATION_NOT_ENABLED),
    ],
)
def test_permanent_codes(code: str, reason: Reason) -> None:
    # The message must not steer these: only NotAuthorized reads its prose.
    error = classify(code, "token has been revoked")
    assert type(error) is PermanentError
    assert error.reason is reason
    assert error.code == code


def test_too_many_requests_is_throttled_and_retryable() -> None:
    error = classify("TooManyRequestsException", "Rate exceeded")
    assert type(error) is ThrottledError
    assert isinstance(error, RetryableError)
    assert error.code == "TooManyRequestsException"


@pytest.mark.parametrize(
    "code",
    [
        "InternalErrorException",
        "ForbiddenException",
        "ServiceUnavailable",
        "AccessDeniedException",
        "SomethingNewException",
        "",
    ],
)
def test_server_side_and_unknown_codes_are_retryable(code: str) -> None:
    error = classify(code, "Access Token has been revoked")
    assert type(error) is RetryableError
    assert not isinstance(error, PermanentError)
    assert error.code == code


def test_error_tree() -> None:
    assert issubclass(PermanentError, SignOutError)
    assert issubclass(RetryableError, SignOutError)
    assert issubclass(ThrottledError, RetryableError)
    assert not issubclass(PermanentError, RetryableError)


def test_error_text_is_code_and_message() -> None:
    assert str(classify("InternalErrorException", "boom")) == "InternalErrorException: boom"
    assert str(classify("InternalErrorException", "")) == "InternalErrorException"
