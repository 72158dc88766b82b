"""events.py: decoding requests and the local JWT pre-flight, both total for any input."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.unit.fakes import make_jwt
from worker.errors import LOCAL_CODE, PermanentError, Reason
from worker.events import (
    CLOCK_SKEW_SECONDS,
    AdminTarget,
    TokenTarget,
    claims,
    decode,
    json_schema,
    preflight,
    request_time,
)
from worker.redaction import Fingerprint, fingerprint

NOW = 1_700_000_000.0
TOKEN = make_jwt(exp=int(NOW) + 3600)
FINGERPRINT = re.compile(r"sha256:[0-9a-f]{16}")


def _encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def _invalid_payload(value: bytes | None) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        decode(value)
    assert caught.value.reason is Reason.INVALID_PAYLOAD
    assert caught.value.code == LOCAL_CODE
    return caught.value


# -- decode ------------------------------------------------------------------------------------


def test_decode_a_token_request() -> None:
    request = decode(
        _encode(
            {
                "event_id": "e-1",
                "access_token": TOKEN,
                "reason": "impossible travel",
                "source": "siem",
                "requested_at": "2024-05-01T12:00:00Z",
            }
        )
    )
    assert request.event_id == "e-1"
    assert request.token == TOKEN
    assert request.user_pool_id is None
    assert request.reason == "impossible travel"
    assert request.source == "siem"
    assert request.requested_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_decode_an_admin_request() -> None:
    request = decode(_encode({"event_id": "e-2", "user_pool_id": "eu-west-1_Ab", "username": "u"}))
    assert request.token is None
    assert (request.user_pool_id, request.username) == ("eu-west-1_Ab", "u")


def test_decode_ignores_unknown_fields() -> None:
    request = decode(_encode({"event_id": "e-3", "access_token": TOKEN, "schema": 2, "x": [1]}))
    assert request.event_id == "e-3"
    assert not hasattr(request, "x")


def test_missing_event_id_is_invalid_payload() -> None:
    error = _invalid_payload(_encode({"access_token": TOKEN}))
    assert "event_id" in error.message


def test_empty_event_id_is_invalid_payload() -> None:
    _invalid_payload(_encode({"event_id": "", "access_token": TOKEN}))


def test_no_target_is_invalid_payload() -> None:
    _invalid_payload(_encode({"event_id": "e-4", "reason": "no one to sign out"}))


def test_user_pool_id_without_username_is_invalid_payload() -> None:
    _invalid_payload(_encode({"event_id": "e-5", "user_pool_id": "us-east-1_X"}))


def test_username_without_user_pool_id_is_invalid_payload() -> None:
    _invalid_payload(_encode({"event_id": "e-5", "username": "alice"}))


@pytest.mark.parametrize(
    "value",
    [b"\xff\xfe\x00garbage", b"not json at all", b"", b"{", "{}".encode("utf-16")],
    ids=["binary", "text", "empty", "truncated", "utf16"],
)
def test_garbage_bytes_are_invalid_payload(value: bytes) -> None:
    _invalid_payload(value)


def test_none_value_is_invalid_payload() -> None:
    error = _invalid_payload(None)
    assert error.message == "empty record value"


@pytest.mark.parametrize("document", [[1, 2], "e-1", 42, None, True])
def test_non_object_json_is_invalid_payload(document: Any) -> None:
    _invalid_payload(_encode(document))


@pytest.mark.parametrize(
    ("field", "limit"),
    [("event_id", 128), ("reason", 256), ("source", 128), ("username", 128)],
)
def test_too_long_fields_are_invalid_payload(field: str, limit: int) -> None:
    document: dict[str, Any] = {"event_id": "e-6", "user_pool_id": "us-east-1_X", "username": "u"}
    document[field] = "a" * limit
    assert decode(_encode(document))  # exactly at the limit is fine
    document[field] = "a" * (limit + 1)
    error = _invalid_payload(_encode(document))
    assert field in error.message


def test_wrongly_typed_token_is_invalid_payload() -> None:
    _invalid_payload(_encode({"event_id": "e-7", "access_token": 12345}))


def test_naive_requested_at_is_invalid_payload() -> None:
    _invalid_payload(
        _encode({"event_id": "e-8", "access_token": TOKEN, "requested_at": "2024-05-01T12:00:00"})
    )


def test_invalid_payload_message_never_echoes_the_token() -> None:
    error = _invalid_payload(_encode({"access_token": TOKEN, "requested_at": TOKEN}))
    assert TOKEN not in str(error)
    assert TOKEN not in error.message


# -- the model never shows a token -------------------------------------------------------------


def test_repr_and_str_of_a_request_never_contain_the_token() -> None:
    request = decode(_encode({"event_id": "e-9", "access_token": TOKEN}))
    for text in (repr(request), str(request), f"{request}", f"{request!r}"):
        assert TOKEN not in text
        assert "event_id='e-9'" in text  # the rest is shown
    assert TOKEN not in json.dumps(request.model_dump(mode="json"))


def test_repr_of_a_token_target_never_contains_the_token() -> None:
    target = TokenTarget(SecretStr(TOKEN))
    assert TOKEN not in repr(target)
    assert target.key == "token:" + fingerprint(TOKEN)
    assert TOKEN not in target.key


def test_a_token_target_is_named_by_its_fingerprint_and_compared_by_its_token() -> None:
    target = TokenTarget(SecretStr(TOKEN))
    assert target.fingerprint == fingerprint(TOKEN)
    assert isinstance(target.fingerprint, Fingerprint)  # the log scrubber may let it through
    assert target == TokenTarget(SecretStr(TOKEN))
    assert target != TokenTarget(SecretStr(make_jwt(exp=1)))
    assert len({target, TokenTarget(SecretStr(TOKEN))}) == 1


def test_admin_target_key_names_pool_and_user() -> None:
    assert AdminTarget("us-east-1_X", "alice").key == "admin:us-east-1_X/alice"


def test_json_schema_has_the_fields() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["x-schema-version"] == 1
    assert schema["title"] == "SignOutRequest"
    assert set(schema["properties"]) == {
        "event_id",
        "access_token",
        "user_pool_id",
        "username",
        "reason",
        "source",
        "requested_at",
    }
    assert schema["required"] == ["event_id"]
    assert schema["properties"]["event_id"]["maxLength"] == 128
    json.dumps(schema)  # printable as-is by `signout-worker schema`


# -- pre-flight --------------------------------------------------------------------------------


def _refused(token: str, now: float = NOW) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        preflight(token, now)
    assert caught.value.code == LOCAL_CODE
    assert caught.value.message in {
        "token is not a JWT",
        "token has no finite numeric exp claim",
        "token exp is in the past",
    }
    return caught.value


def _segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_live_token_passes() -> None:
    preflight(TOKEN, NOW)
    assert claims(TOKEN)["exp"] == int(NOW) + 3600


@pytest.mark.parametrize(
    "token",
    ["", "opaque-refresh-token", "a.b", "a.b.c.d", ".payload.sig", "header..sig"],
)
def test_not_a_jwt_is_token_invalid(token: str) -> None:
    assert _refused(token).reason is Reason.TOKEN_INVALID


def test_bad_base64_is_token_invalid() -> None:
    assert _refused("a.b.c").reason is Reason.TOKEN_INVALID
    assert _refused("!!!!.????.sig").reason is Reason.TOKEN_INVALID


def test_non_json_header_is_token_invalid() -> None:
    payload = _segment(json.dumps({"exp": NOW + 60}).encode())
    token = f"{_segment(b'not json')}.{payload}.sig"
    assert _refused(token).reason is Reason.TOKEN_INVALID


def test_non_utf8_payload_is_token_invalid() -> None:
    token = f"{_segment(b'{}')}.{_segment(bytes([0xFF, 0xFE, 0xFD]))}.sig"
    assert _refused(token).reason is Reason.TOKEN_INVALID


@pytest.mark.parametrize("header", [[], "RS256", 1])
def test_non_object_header_is_token_invalid(header: Any) -> None:
    assert _refused(make_jwt(exp=NOW + 60, header=header)).reason is Reason.TOKEN_INVALID


def test_non_object_payload_is_token_invalid() -> None:
    token = f"{_segment(b'{}')}.{_segment(b'[1, 2]')}.sig"
    assert _refused(token).reason is Reason.TOKEN_INVALID


def test_missing_exp_is_token_invalid() -> None:
    assert _refused(make_jwt()).reason is Reason.TOKEN_INVALID


@pytest.mark.parametrize("exp", [True, False, "1700000000", [1], {"at": 1}])
def test_non_numeric_exp_is_token_invalid(exp: Any) -> None:
    assert _refused(make_jwt(exp=exp)).reason is Reason.TOKEN_INVALID


def test_exp_past_beyond_the_skew_is_token_expired() -> None:
    token = make_jwt(exp=NOW - CLOCK_SKEW_SECONDS - 1)
    assert _refused(token).reason is Reason.TOKEN_EXPIRED


def test_exp_long_past_is_token_expired() -> None:
    assert _refused(make_jwt(exp=int(NOW) - 86_400)).reason is Reason.TOKEN_EXPIRED


@pytest.mark.parametrize("behind", [0.0, 1.0, 29.0, CLOCK_SKEW_SECONDS])
def test_exp_within_the_skew_passes(behind: float) -> None:
    preflight(make_jwt(exp=NOW - behind), NOW)


@pytest.mark.parametrize(
    "token",
    [
        make_jwt(exp=float("nan")),
        make_jwt(exp=float("inf")),
        make_jwt(exp=float("-inf")),
        make_jwt(exp=10**400),
        TOKEN[:-2] + "\ud800x",  # a lone surrogate: no header could carry it
        TOKEN + "\u00e9",
    ],
    ids=["nan", "inf", "-inf", "huge-int", "surrogate", "non-ascii"],
)
def test_tokens_no_call_could_carry_are_token_invalid(token: str) -> None:
    assert _refused(token).reason is Reason.TOKEN_INVALID


def test_the_skew_is_thirty_seconds() -> None:
    assert CLOCK_SKEW_SECONDS == 30.0


def test_float_exp_is_accepted() -> None:
    preflight(make_jwt(exp=NOW + 0.5), NOW)


# -- request_time ------------------------------------------------------------------------------


def test_request_time_prefers_requested_at() -> None:
    request = decode(
        _encode({"event_id": "e", "access_token": TOKEN, "requested_at": "2024-05-01T12:00:00Z"})
    )
    assert request_time(request, 0) == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_request_time_falls_back_to_the_record_timestamp() -> None:
    request = decode(_encode({"event_id": "e", "access_token": TOKEN}))
    assert request_time(request, 1_714_564_800_000) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert request_time(request, -1) is None
    assert request_time(request, None) is None


# -- totality ----------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=20,
)


def _jwt(header: object, payload: object) -> str:
    raw = [json.dumps(part).encode() for part in (header, payload)]
    return ".".join(base64.urlsafe_b64encode(r).rstrip(b"=").decode() for r in raw) + ".sig"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.tuples(_JSON, _JSON).map(lambda hp: _jwt(*hp)))
def test_preflight_decides_or_passes_for_any_token(token: str) -> None:
    reason: Reason | None = None
    try:
        preflight(token, NOW)
    except PermanentError as exc:  # anything else escapes and fails the test
        reason = exc.reason
    assert reason in {None, Reason.TOKEN_INVALID, Reason.TOKEN_EXPIRED}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_decode_returns_or_says_invalid_payload_for_any_value(value: bytes) -> None:
    reason: Reason | None = None
    try:
        decode(value)
    except PermanentError as exc:  # anything else escapes and fails the test
        reason = exc.reason
    assert reason in {None, Reason.INVALID_PAYLOAD}
