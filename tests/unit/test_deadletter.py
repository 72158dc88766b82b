"""deadletter.py: the pure builders of dead-letter and results records (contracts.md §3, §4)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import SecretStr

from tests.contract import DLQ_HEADERS
from tests.unit.fakes import make_jwt
from worker import __version__
from worker.deadletter import Outgoing, dead_letter_record, result_record
from worker.errors import LOCAL_CODE, Outcome, PermanentError, Reason, classify
from worker.events import AdminTarget, SignOutRequest, TokenTarget, decode
from worker.records import Lane, Record, Result
from worker.redaction import fingerprint

TOKEN = make_jwt(exp=1_700_003_600)
NOW = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REDACTED = re.compile(r"redacted:sha256:[0-9a-f]{16}")

HEADER_NAMES = list(DLQ_HEADERS)


def _token_value(**extra: object) -> bytes:
    document = {"event_id": "e-1", "access_token": TOKEN, "reason": "impossible travel", **extra}
    return json.dumps(document).encode()


def _record(value: bytes | None, headers: tuple[tuple[str, bytes], ...] = ()) -> Record:
    return Record(
        topic="signout.requests",
        partition=3,
        offset=4711,
        key=b"user-42",
        value=value,
        headers=headers,
        timestamp_ms=1_714_564_800_000,
    )


def _dead(record: Record, result: Result, *, redact: bool = True) -> Outgoing:
    return dead_letter_record(
        record, result, topic="signout.requests.dlq", group_id="grp", redact=redact, now=NOW
    )


def _failed(request: SignOutRequest | None, error: PermanentError, attempts: int = 1) -> Result:
    target = TokenTarget(request.access_token) if request and request.access_token else None
    return Result(Outcome.DEAD_LETTERED, error.reason, attempts, error, request, target)


def _headers(out: Outgoing) -> dict[str, str]:
    names = [k for k, _ in out.headers]
    assert len(names) == len(set(names)), "a header name appears twice"
    return {k: v.decode("utf-8") for k, v in out.headers}


def _everything(out: Outgoing) -> bytes:
    return b"".join([out.key or b"", out.value or b"", *(k.encode() + v for k, v in out.headers)])


# -- dead letters ------------------------------------------------------------------------------


def test_all_contract_headers_with_their_values() -> None:
    value = _token_value()
    request = decode(value)
    error = classify("UserNotFoundException", "User does not exist.")
    assert isinstance(error, PermanentError)
    out = _dead(_record(value), _failed(request, error, attempts=2))
    headers = _headers(out)
    assert [k for k, _ in out.headers] == HEADER_NAMES
    assert headers == {
        "signout.error.reason": "user_not_found",
        "signout.error.code": "UserNotFoundException",
        "signout.error.message": "User does not exist.",
        "signout.original.topic": "signout.requests",
        "signout.original.partition": "3",
        "signout.original.offset": "4711",
        "signout.original.timestamp": "1714564800000",
        "signout.consumer.group": "grp",
        "signout.attempts": "2",
        "signout.failed_at": "2024-05-01T12:30:15.123Z",
        "signout.worker.version": __version__,
    }
    assert out.topic == "signout.requests.dlq"
    assert out.key == b"user-42"


def test_failed_at_is_rfc3339_in_utc_whatever_the_zone_of_now() -> None:
    error = PermanentError(Reason.INVALID_PAYLOAD, LOCAL_CODE, "x")
    result = Result(Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD, error=error)
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    out = dead_letter_record(
        _record(b"x"), result, topic="dlq", group_id="g", redact=True, now=local
    )
    failed_at = _headers(out)["signout.failed_at"]
    assert failed_at == "2024-05-01T12:30:15.123Z"
    assert datetime.fromisoformat(failed_at) == NOW.replace(microsecond=123000)


def test_original_headers_are_carried_and_incoming_signout_headers_dropped() -> None:
    incoming = (
        ("traceparent", TRACEPARENT),
        ("signout.error.reason", b"from-an-earlier-life"),
        ("signout.attempts", b"99"),
        ("content-type", b"application/json"),
    )
    value = _token_value()
    error = PermanentError(Reason.TOKEN_REVOKED, "NotAuthorizedException", "revoked")
    out = _dead(_record(value, incoming), _failed(decode(value), error))
    assert out.headers[:2] == (("traceparent", TRACEPARENT), ("content-type", b"application/json"))
    headers = _headers(out)
    assert headers["signout.error.reason"] == "token_revoked"
    assert headers["signout.attempts"] == "1"
    assert [k for k, _ in out.headers[2:]] == HEADER_NAMES


@pytest.mark.parametrize("name", ["SIGNOUT.error.reason", "Signout.Attempts", "sIgNoUt.x"])
def test_incoming_signout_headers_are_dropped_in_any_case(name: str) -> None:
    value = _token_value()
    error = PermanentError(Reason.TOKEN_REVOKED, "NotAuthorizedException", "revoked")
    out = _dead(_record(value, ((name, b"forged"), ("trace", b"t"))), _failed(decode(value), error))
    assert b"forged" not in _everything(out)
    assert [k for k, _ in out.headers] == ["trace", *HEADER_NAMES]


def test_internal_error_keeps_the_value_for_replay() -> None:
    value = _token_value()
    error = PermanentError(Reason.INTERNAL_ERROR, "Internal", "RuntimeError at handler.py:1")
    out = _dead(_record(value), Result(Outcome.DEAD_LETTERED, Reason.INTERNAL_ERROR, error=error))
    assert out.value == value
    assert _headers(out)["signout.error.code"] == "Internal"


def test_a_header_message_with_a_lone_surrogate_is_still_written() -> None:
    error = PermanentError(Reason.INVALID_PAYLOAD, "Local", "field \ud800: bad")
    out = _dead(_record(b"x"), Result(Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD, error=error))
    assert _headers(out)["signout.error.message"] == "field ?: bad"


@pytest.mark.parametrize(
    "reason",
    [Reason.TOKEN_REVOKED, Reason.TOKEN_EXPIRED, Reason.NOT_AUTHORIZED, Reason.INVALID_PARAMETER],
)
def test_the_token_of_a_permanent_failure_is_redacted(reason: Reason) -> None:
    value = _token_value(source="siem")
    error = PermanentError(reason, "NotAuthorizedException", "refused")
    out = _dead(_record(value), _failed(decode(value), error))
    assert TOKEN.encode() not in _everything(out)
    assert out.value is not None
    document = json.loads(out.value)
    assert REDACTED.fullmatch(document["access_token"])
    assert document["access_token"] == "redacted:" + fingerprint(TOKEN)
    assert document["event_id"] == "e-1"
    assert document["reason"] == "impossible travel"
    assert document["source"] == "siem"


def test_retries_exhausted_keeps_the_value_for_replay() -> None:
    value = _token_value()
    error = PermanentError(Reason.RETRIES_EXHAUSTED, "InternalErrorException", "gave up")
    out = _dead(_record(value), _failed(decode(value), error, attempts=10))
    assert out.value == value
    assert _headers(out)["signout.attempts"] == "10"
    assert _headers(out)["signout.error.code"] == "InternalErrorException"


def test_redaction_can_be_switched_off() -> None:
    value = _token_value()
    error = PermanentError(Reason.TOKEN_REVOKED, "NotAuthorizedException", "revoked")
    out = _dead(_record(value), _failed(decode(value), error), redact=False)
    assert out.value == value


@pytest.mark.parametrize(
    "value",
    [b"\xff\xfe not json", b"[1, 2, 3]", b'"just a string"', b'{"event_id": "e"}', b"", None],
)
def test_unparseable_or_tokenless_payloads_are_kept_byte_for_byte(value: bytes | None) -> None:
    error = PermanentError(Reason.INVALID_PAYLOAD, LOCAL_CODE, "bad")
    result = Result(Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD, error=error)
    out = _dead(_record(value), result)
    assert out.value == value
    assert _headers(out)["signout.error.code"] == LOCAL_CODE


def test_an_invalid_payload_holding_a_token_still_has_it_redacted() -> None:
    value = json.dumps({"access_token": TOKEN}).encode()  # no event_id: invalid payload
    error = PermanentError(Reason.INVALID_PAYLOAD, LOCAL_CODE, "event_id: Field required")
    result = Result(Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD, error=error)
    out = _dead(_record(value), result)
    assert TOKEN.encode() not in _everything(out)


def test_the_error_message_header_is_scrubbed() -> None:
    value = _token_value()
    opaque = "x" * 48
    error = PermanentError(
        Reason.TOKEN_INVALID,
        "NotAuthorizedException",
        f"Invalid Access Token {TOKEN} and {opaque} and {TOKEN[:12]}",
    )
    out = _dead(_record(value), _failed(decode(value), error))
    message = _headers(out)["signout.error.message"]
    assert TOKEN not in message
    assert opaque not in message
    assert message.startswith("Invalid Access Token <redacted>")


def test_the_request_token_is_scrubbed_from_the_message_even_when_short() -> None:
    value = json.dumps({"event_id": "e-2", "access_token": "short-tok"}).encode()
    request = decode(value)
    error = PermanentError(Reason.TOKEN_INVALID, LOCAL_CODE, "bad token short-tok")
    out = _dead(_record(value), _failed(request, error))
    assert _headers(out)["signout.error.message"] == "bad token <redacted>"
    assert b"short-tok" not in _everything(out)


def test_a_result_without_an_error_uses_the_local_code() -> None:
    result = Result(Outcome.DEAD_LETTERED, Reason.ADMIN_DISABLED)
    headers = _headers(_dead(_record(b"{}"), result))
    assert headers["signout.error.code"] == LOCAL_CODE
    assert headers["signout.error.message"] == ""
    assert headers["signout.attempts"] == "0"


# -- results -----------------------------------------------------------------------------------


RESULT_FIELDS = {
    "event_id",
    "outcome",
    "reason",
    "error_code",
    "attempts",
    "target",
    "requested_at",
    "completed_at",
    "lane",
}


def _result_document(out: Outgoing) -> dict[str, object]:
    assert out.value is not None
    document = json.loads(out.value)
    assert set(document) == RESULT_FIELDS
    return dict(document)


def test_result_of_a_token_sign_out_has_the_fingerprint_never_the_token() -> None:
    value = _token_value(requested_at="2024-05-01T14:00:00+02:00")
    request = decode(value)
    result = Result(
        Outcome.SIGNED_OUT,
        Reason.GLOBAL_SIGN_OUT,
        1,
        None,
        request,
        TokenTarget(SecretStr(TOKEN)),
    )
    out = result_record(_record(value), result, topic="signout.results", now=NOW)
    assert TOKEN.encode() not in _everything(out)
    assert out.topic == "signout.results"
    assert out.key == b"user-42"
    assert out.headers == ()
    assert _result_document(out) == {
        "event_id": "e-1",
        "outcome": "signed_out",
        "reason": "global_sign_out",
        "error_code": None,
        "attempts": 1,
        "target": {"kind": "access_token", "fingerprint": fingerprint(TOKEN)},
        "requested_at": "2024-05-01T12:00:00.000Z",
        "completed_at": "2024-05-01T12:30:15.123Z",
        "lane": "bulk",
    }


def test_result_of_an_admin_dead_letter() -> None:
    value = json.dumps({"event_id": "e-3", "user_pool_id": "p_1", "username": "alice"}).encode()
    request = decode(value)
    error = classify("UserNotFoundException", "User does not exist.")
    assert isinstance(error, PermanentError)
    result = Result(
        Outcome.DEAD_LETTERED, error.reason, 2, error, request, AdminTarget("p_1", "alice")
    )
    document = _result_document(result_record(_record(value), result, topic="r", now=NOW))
    assert document["outcome"] == "dead_lettered"
    assert document["reason"] == "user_not_found"
    assert document["error_code"] == "UserNotFoundException"
    assert document["attempts"] == 2
    assert document["target"] == {"kind": "admin", "user_pool_id": "p_1", "username": "alice"}
    assert document["requested_at"] is None


def test_result_of_an_invalid_payload_has_no_event_id_or_target() -> None:
    error = PermanentError(Reason.INVALID_PAYLOAD, LOCAL_CODE, "bad")
    result = Result(Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD, error=error)
    document = _result_document(result_record(_record(b"nope"), result, topic="r", now=NOW))
    assert document["event_id"] is None
    assert document["target"] is None
    assert document["error_code"] == LOCAL_CODE
    assert document["reason"] == "invalid_payload"


def test_result_of_an_urgent_request_says_its_lane() -> None:
    value = _token_value()
    result = Result(
        Outcome.SIGNED_OUT,
        Reason.GLOBAL_SIGN_OUT,
        1,
        request=decode(value),
        target=TokenTarget(SecretStr(TOKEN)),
        lane=Lane.URGENT,
    )
    document = _result_document(result_record(_record(value), result, topic="r", now=NOW))
    assert document["lane"] == "urgent"
    assert document["outcome"] == "signed_out"


def test_a_record_with_neither_key_nor_value_gets_an_empty_value_the_client_accepts() -> None:
    bare = Record("signout.requests", 0, 7, None, None)
    error = PermanentError(Reason.INVALID_PAYLOAD, "Local", "empty record value")
    out = _dead(bare, Result(Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD, error=error))
    assert (out.key, out.value) == (None, b"")
    assert _headers(out)["signout.original.offset"] == "7"
