"""handler.py as the last-resort boundary: hostile input, its own failures, endless retries.

Every record ends in exactly one terminal outcome, whatever its value holds and whatever the
worker's own code raises (cancellation aside).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fakes import FakeClock, FakeSleep, RaisingSigner, ScriptedSigner, make_jwt
from tests.unit.test_handler import (
    NOW,
    TOKEN_KEY,
    _settings,
    harness,
    internal,
    record,
    token_request,
)
from worker.errors import INTERNAL_CODE, Outcome, Reason, SignOutError, UnreachableError
from worker.handler import Signer


def unreachable() -> SignOutError:
    return UnreachableError("EndpointConnectionError", "Could not connect to the endpoint URL")


def _segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwt_with_payload(payload: bytes, header: bytes = b'{"alg":"RS256"}') -> str:
    return f"{_segment(header)}.{_segment(payload)}.{_segment(b'signature-bytes-here')}"


# -- the worker's own failures: internal_error -------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("bug with eyJhbGciOi.secret.input"),
        RecursionError("maximum recursion depth exceeded"),
        OverflowError("int too large to convert to float"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        MemoryError(),
        KeyError("x"),
    ],
    ids=type,
)
async def test_any_failure_of_the_worker_ends_as_internal_error(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    failing: Signer = RaisingSigner(error)
    h.handler._signer = failing
    value = json.dumps(token_request()).encode()
    result = await h.handler.handle(record(value))
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.INTERNAL_ERROR)
    assert result.error is not None
    assert result.error.code == INTERNAL_CODE
    assert [r.value for r, _ in h.sink.acked] == [value]  # written, and acknowledged
    assert h.events("dead_lettered", "internal_error") == 1
    assert h.dlq("internal_error") == 1
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert line.__dict__["error"] == type(error).__name__
    assert line.__dict__["at"].startswith("fakes.py:")  # the raising frame, file:line
    assert "secret" not in line.getMessage() + str(line.__dict__)


async def test_a_failing_limiter_is_an_internal_error_too() -> None:
    h = harness()

    async def broken() -> float:
        raise ZeroDivisionError("bug")

    h.limiter.acquire = broken  # type: ignore[method-assign]
    result = await h.handle(token_request())
    assert result.reason is Reason.INTERNAL_ERROR
    assert h.signer.calls == []


async def test_cancellation_is_not_turned_into_a_dead_letter() -> None:
    h = harness()
    h.handler._signer = RaisingSigner(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await h.handle(token_request())
    assert h.sink.dead_letter_calls == 0


# -- hostile values: decode and pre-flight are total -------------------------------------------


DEEP = 100_000


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[" * DEEP + b"]" * DEEP, Reason.INVALID_PAYLOAD),
        (b'{"event_id": "e", "access_token": "x", "reason": ' + b"[" * DEEP + b"}", None),
        (b'{"event_id": "\\ud800", "access_token": "t"}', Reason.INVALID_PAYLOAD),
        (b'{"event_id": "e", "access_token": "t", "n": ' + b"9" * 10_000 + b"}", None),
        (b"\xff\xfe" * 500_000, Reason.INVALID_PAYLOAD),
    ],
    ids=["deep-array", "deep-field", "lone-surrogate", "huge-int", "megabyte-garbage"],
)
async def test_hostile_values_end_as_dead_letters(value: bytes, reason: Reason | None) -> None:
    h = harness()
    result = await h.handler.handle(record(value))
    assert result.outcome is Outcome.DEAD_LETTERED
    assert result.reason in {reason or Reason.INVALID_PAYLOAD, Reason.TOKEN_INVALID}
    assert h.signer.calls == []
    assert len(h.sink.acked) == 1


@pytest.mark.parametrize(
    "token",
    [
        make_jwt(exp=float("nan")),
        make_jwt(exp=float("inf")),
        make_jwt(exp=10**400),  # past any float: OverflowError
        _jwt_with_payload(b'{"exp": ' + b"9" * 5000 + b"}"),  # past the int digit limit
        _jwt_with_payload(b'{"exp": 1, "x": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        _jwt_with_payload(b'{"exp": 4000000000}', header=b"[" * DEEP + b"]" * DEEP),
        _jwt_with_payload(b'{"exp": 4000000000, "sub": "\\ud800"}') + "\u00e9",
    ],
    ids=["nan", "inf", "huge-int", "digit-limit", "deep-payload", "deep-header", "non-ascii"],
)
async def test_hostile_tokens_are_token_invalid_without_a_call(token: str) -> None:
    h = harness()
    value = json.dumps(token_request(token=token)).encode()  # ensure_ascii: surrogates escaped
    result = await h.handler.handle(record(value))
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.TOKEN_INVALID)
    assert h.signer.calls == []


async def test_negative_infinity_exp_is_invalid_not_expired() -> None:
    h = harness()
    result = await h.handle(token_request(token=make_jwt(exp=-math.inf)))
    assert result.reason is Reason.TOKEN_INVALID


async def test_a_lone_surrogate_in_a_claim_still_signs_out() -> None:
    token = _jwt_with_payload(b'{"exp": %d, "sub": "\\ud800"}' % (int(NOW) + 3600))
    h = harness()
    result = await h.handle(token_request(token=token))
    assert result.outcome is Outcome.SIGNED_OUT


async def test_a_record_timestamp_past_year_9999_is_not_a_failure() -> None:
    h = harness()
    result = await h.handler.handle(record(token_request(), timestamp_ms=2**62))
    assert result.outcome is Outcome.SIGNED_OUT


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
_CLAIMS = st.fixed_dictionaries({"exp": _JSON}, optional={"sub": _JSON})
_TOKENS = (
    st.text(max_size=200)
    | _CLAIMS.map(lambda c: _jwt_with_payload(json.dumps(c).encode()))
    | st.tuples(_JSON, _JSON).map(
        lambda hp: _jwt_with_payload(json.dumps(hp[1]).encode(), json.dumps(hp[0]).encode())
    )
)
_VALUES = (
    st.binary(max_size=300)
    | _JSON.map(lambda v: json.dumps(v).encode())
    | _TOKENS.map(lambda t: json.dumps({"event_id": "e", "access_token": t}).encode())
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUES)
async def test_any_value_ends_in_exactly_one_outcome(value: bytes) -> None:
    h = harness(settings=_settings(max_attempts=2))
    result = await h.handler.handle(record(value))
    assert result.outcome in set(Outcome)
    assert result.reason is not Reason.INTERNAL_ERROR  # input is never the worker's failure
    assert len(h.sink.acked) == (result.outcome is Outcome.DEAD_LETTERED)
    assert sum(1 for _ in h.sink.reports) == 1


# -- endless retries ---------------------------------------------------------------------------


async def test_one_record_through_more_than_ten_thousand_failed_attempts() -> None:
    failures = 10_050
    signer = ScriptedSigner({TOKEN_KEY: [unreachable() for _ in range(failures)]})
    h = harness(signer, settings=_settings(max_attempts=3, base_delay=0.2, max_delay=10.0))
    clock = FakeClock(NOW)
    h.handler._sleep = FakeSleep(clock)
    h.handler._now = clock
    h.handler._rng = _Top()
    result = await h.handle(token_request())
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT)
    assert result.attempts == failures + 1
    delays = h.handler._sleep.delays
    assert len(delays) == failures
    assert max(delays) == 10.0  # capped, never an overflow
    assert clock.now - NOW == pytest.approx(sum(delays))


class _Top(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


async def test_a_lone_request_during_an_outage_is_never_dead_lettered() -> None:
    # Nothing else in flight, Cognito unreachable for longer than max_attempts: it waits it out.
    signer = ScriptedSigner({TOKEN_KEY: [unreachable() for _ in range(40)]})
    h = harness(signer, settings=_settings(max_attempts=4))
    result = await h.handle(token_request())
    assert result.outcome is Outcome.SIGNED_OUT
    assert result.attempts == 41
    assert h.sink.dead_letter_calls == 0


async def test_a_lone_request_failing_with_a_cognito_error_is_still_exhausted() -> None:
    signer = ScriptedSigner(forever={TOKEN_KEY: internal})
    h = harness(signer, settings=_settings(max_attempts=4))
    result = await h.handle(token_request())
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.RETRIES_EXHAUSTED)
    assert result.attempts == 4


async def test_unreachable_failures_between_real_ones_do_not_count() -> None:
    steps = [internal(), unreachable(), unreachable(), internal(), unreachable(), None]
    h = harness(ScriptedSigner({TOKEN_KEY: steps}), settings=_settings(max_attempts=3))
    result = await h.handle(token_request())
    assert result.outcome is Outcome.SIGNED_OUT
    assert result.attempts == 6


async def test_dead_letter_retries_mark_progress() -> None:
    from tests.unit.fakes import FakeSink

    h = harness(sink=FakeSink(dead_letter_failures=3))
    await h.handle(token_request(token="not-a-jwt"))
    assert h.progress.marks == 3
    assert len(h.sink.acked) == 1
    assert all(delay <= 30.0 for delay in h.sleep.delays)
