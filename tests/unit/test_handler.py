"""handler.py: one record to one terminal outcome, against in-memory fakes of every seam."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest

from tests.unit.fakes import (
    FakeClock,
    FakeLimiter,
    FakeProgress,
    FakeSink,
    FakeSleep,
    RaisingSigner,
    ScriptedSigner,
    make_jwt,
)
from worker.errors import LOCAL_CODE, Outcome, Reason, SignOutError, classify
from worker.events import AdminTarget, Target, TokenTarget
from worker.handler import Handler, Signer, trace_id
from worker.metrics import Metrics
from worker.records import Record, Result
from worker.redaction import fingerprint
from worker.settings import CognitoSettings, DedupSettings, RetrySettings, Settings

NOW = 1_700_000_000.0
TOKEN = make_jwt(exp=int(NOW) + 3600)
OTHER_TOKEN = make_jwt(exp=int(NOW) + 3600, sub="someone-else")
EXPIRED = make_jwt(exp=int(NOW) - 3600)
TOKEN_KEY = "token:" + fingerprint(TOKEN)
POOL = "us-east-1_Pool"
ADMIN_KEY = f"admin:{POOL}/alice"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _err(code: str, message: str = "") -> SignOutError:
    return classify(code, message)


def internal() -> SignOutError:
    return _err("InternalErrorException", "Internal error")


def throttled() -> SignOutError:
    return _err("TooManyRequestsException", "Rate exceeded")


def revoked() -> SignOutError:
    return _err("NotAuthorizedException", "Access Token has been revoked")


def user_not_found() -> SignOutError:
    return _err("UserNotFoundException", "User does not exist.")


def _settings(
    *,
    max_attempts: int = 4,
    admin_enabled: bool = True,
    window_seconds: float = 300.0,
    base_delay: float = 0.2,
    max_delay: float = 10.0,
) -> Settings:
    return Settings().model_copy(
        update={
            "retry": RetrySettings(
                max_attempts=max_attempts,
                base_delay_seconds=base_delay,
                max_delay_seconds=max_delay,
            ),
            "cognito": CognitoSettings(admin_enabled=admin_enabled),
            "dedup": DedupSettings(window_seconds=window_seconds),
        }
    )


@dataclass
class Harness:
    handler: Handler
    signer: ScriptedSigner
    sink: FakeSink
    limiter: FakeLimiter
    sleep: FakeSleep
    clock: FakeClock
    metrics: Metrics
    settings: Settings
    progress: FakeProgress

    async def handle(self, document: dict[str, Any] | bytes | None, **kwargs: Any) -> Result:
        return await self.handler.handle(record(document, **kwargs))

    def events(self, outcome: str, reason: str) -> float:
        labels = {"outcome": outcome, "reason": reason, "lane": "bulk"}
        return self.metrics.registry.get_sample_value("signout_events_total", labels) or 0.0

    def dlq(self, reason: str) -> float:
        labels = {"reason": reason}
        return self.metrics.registry.get_sample_value("signout_dlq_records_total", labels) or 0.0


def harness(
    signer: ScriptedSigner | None = None,
    *,
    sink: FakeSink | None = None,
    settings: Settings | None = None,
    rng: random.Random | None = None,
) -> Harness:
    signer = signer or ScriptedSigner()
    sink = sink or FakeSink()
    settings = settings or _settings()
    limiter = FakeLimiter()
    clock = FakeClock(NOW)
    sleep = FakeSleep()
    metrics = Metrics()
    progress = FakeProgress()
    handler = Handler(
        signer,
        sink,
        limiter,
        metrics,
        retry=settings.retry,
        dedup=settings.dedup,
        admin_enabled=settings.cognito.admin_enabled,
        progress=progress,
        wall_clock=clock,
        sleep=sleep,
        rng=rng or random.Random(1234),
    )
    return Harness(handler, signer, sink, limiter, sleep, clock, metrics, settings, progress)


_offsets = count()


def record(
    document: dict[str, Any] | bytes | None,
    *,
    timestamp_ms: int = -1,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Record:
    value = document if document is None or isinstance(document, bytes) else _json(document)
    return Record("signout.requests", 0, next(_offsets), b"alice", value, headers, timestamp_ms)


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def token_request(event_id: str = "e-1", token: str = TOKEN, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "access_token": token, **extra}


def admin_request(event_id: str = "e-1", username: str = "alice", **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "user_pool_id": POOL, "username": username, **extra}


def both_request(event_id: str = "e-1", token: str = TOKEN) -> dict[str, Any]:
    return {**admin_request(event_id), "access_token": token}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def keys(targets: list[Target]) -> list[str]:
    return [t.key for t in targets]


async def _held_in_flight(
    h: Harness, event_id: str, release: asyncio.Event
) -> asyncio.Task[Result]:
    """Starts handling a token request whose call stays in flight until `release` is set."""
    entered = asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    h.signer.during[TOKEN_KEY] = hold
    task = asyncio.create_task(h.handle(token_request(event_id)))
    await entered.wait()
    return task


# -- signed out --------------------------------------------------------------------------------


async def test_token_request_is_signed_out_with_global_sign_out() -> None:
    h = harness()
    result = await h.handle(token_request())
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT)
    assert result.attempts == 1
    assert result.error is None
    assert isinstance(result.target, TokenTarget)
    assert keys(h.signer.calls) == [TOKEN_KEY]
    assert (h.limiter.acquired, h.limiter.successes, h.limiter.throttled) == (1, 1, 0)
    assert h.sink.dead_letter_calls == 0
    assert [r for _, r in h.sink.reports] == [result]
    assert h.events("signed_out", "global_sign_out") == 1


async def test_admin_only_request_uses_admin_sign_out() -> None:
    h = harness()
    result = await h.handle(admin_request())
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.ADMIN_SIGN_OUT)
    assert result.target == AdminTarget(POOL, "alice")
    assert keys(h.signer.calls) == [ADMIN_KEY]
    assert h.events("signed_out", "admin_sign_out") == 1


async def test_admin_disabled_dead_letters_without_a_call() -> None:
    h = harness(settings=_settings(admin_enabled=False))
    result = await h.handle(admin_request())
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.ADMIN_DISABLED)
    assert result.attempts == 0
    assert result.error is not None
    assert result.error.code == LOCAL_CODE
    assert h.signer.calls == []
    assert h.limiter.acquired == 0
    assert [r for _, r in h.sink.acked] == [result]
    assert h.dlq("admin_disabled") == 1


@pytest.mark.parametrize(
    "message",
    [
        "Access Token has been revoked",
        "Access Token has expired",
        "Invalid Access Token",
        "User is disabled.",
    ],
)
async def test_token_refused_falls_back_to_admin(message: str) -> None:
    signer = ScriptedSigner({TOKEN_KEY: [_err("NotAuthorizedException", message)]})
    h = harness(signer)
    result = await h.handle(both_request())
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.ADMIN_FALLBACK)
    assert keys(h.signer.calls) == [TOKEN_KEY, ADMIN_KEY]
    assert result.attempts == 2
    assert result.target == AdminTarget(POOL, "alice")
    assert h.sink.dead_letter_calls == 0


async def test_locally_expired_token_falls_back_to_admin_with_one_call() -> None:
    h = harness()
    result = await h.handle(both_request(token=EXPIRED))
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.ADMIN_FALLBACK)
    assert keys(h.signer.calls) == [ADMIN_KEY]
    assert result.attempts == 1


async def test_token_refused_with_admin_disabled_is_admin_disabled() -> None:
    h = harness(ScriptedSigner({TOKEN_KEY: [revoked()]}), settings=_settings(admin_enabled=False))
    result = await h.handle(both_request())
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.ADMIN_DISABLED)
    assert keys(h.signer.calls) == [TOKEN_KEY]
    assert result.attempts == 1


async def test_a_non_token_error_does_not_fall_back() -> None:
    signer = ScriptedSigner({TOKEN_KEY: [_err("InvalidParameterException", "bad")]})
    h = harness(signer)
    result = await h.handle(both_request())
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.INVALID_PARAMETER)
    assert keys(h.signer.calls) == [TOKEN_KEY]
    assert isinstance(result.target, TokenTarget)


# -- decided locally ---------------------------------------------------------------------------


async def test_expired_token_is_token_expired_without_a_call() -> None:
    h = harness()
    result = await h.handle(token_request(token=EXPIRED))
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.TOKEN_EXPIRED)
    assert result.attempts == 0
    assert h.signer.calls == []
    assert h.limiter.acquired == 0
    assert [r for _, r in h.sink.acked] == [result]
    assert h.dlq("token_expired") == 1


async def test_token_within_the_clock_skew_is_still_tried() -> None:
    h = harness()
    result = await h.handle(token_request(token=make_jwt(exp=NOW - 10)))
    assert result.outcome is Outcome.SIGNED_OUT
    assert len(h.signer.calls) == 1


@pytest.mark.parametrize(
    "token", ["not-a-jwt", "a.b.c", make_jwt()], ids=["opaque", "b64", "noexp"]
)
async def test_malformed_token_is_token_invalid_without_a_call(token: str) -> None:
    h = harness()
    result = await h.handle(token_request(token=token))
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.TOKEN_INVALID)
    assert h.signer.calls == []
    assert h.limiter.acquired == 0


@pytest.mark.parametrize(
    "value",
    [b"\x00\xff garbage", b"[]", _json({"access_token": TOKEN}), _json({"event_id": "x"}), None],
    ids=["bytes", "array", "no-event-id", "no-target", "none"],
)
async def test_bad_payload_is_dead_lettered_as_invalid_payload(value: bytes | None) -> None:
    h = harness()
    rec = record(value)
    result = await h.handler.handle(rec)
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD)
    assert result.request is None
    assert result.error is not None
    assert result.error.code == LOCAL_CODE
    assert h.signer.calls == []
    assert h.sink.acked == [(rec, result)]
    assert h.dlq("invalid_payload") == 1
    assert h.events("dead_lettered", "invalid_payload") == 1


# -- duplicates --------------------------------------------------------------------------------


async def test_a_repeated_event_id_is_a_duplicate_without_a_call() -> None:
    h = harness()
    first = await h.handle(token_request("e-1"))
    second = await h.handle(token_request("e-1", token=OTHER_TOKEN))
    assert first.outcome is Outcome.SIGNED_OUT
    assert (second.outcome, second.reason) == (Outcome.DUPLICATE, Reason.DUPLICATE_EVENT)
    assert second.attempts == 0
    assert len(h.signer.calls) == 1
    assert h.sink.dead_letter_calls == 0
    assert [r for _, r in h.sink.reports] == [first, second]
    assert h.events("duplicate", "duplicate_event") == 1


async def test_an_event_in_flight_is_a_duplicate() -> None:
    h = harness()
    release = asyncio.Event()
    first = await _held_in_flight(h, "e-1", release)
    second = await h.handle(token_request("e-1"))
    assert second.outcome is Outcome.DUPLICATE
    assert not first.done()
    release.set()
    assert (await first).outcome is Outcome.SIGNED_OUT
    assert len(h.signer.calls) == 1


async def test_same_admin_target_signed_out_after_the_request_was_decided_is_a_duplicate() -> None:
    h = harness()
    await h.handle(admin_request("e-1"))
    h.clock.advance(5)
    earlier = await h.handle(admin_request("e-2", requested_at=_iso(NOW - 60)))
    assert (earlier.outcome, earlier.reason) == (Outcome.DUPLICATE, Reason.DUPLICATE_EVENT)
    by_record_time = await h.handle(admin_request("e-3"), timestamp_ms=int((NOW - 1) * 1000))
    assert by_record_time.outcome is Outcome.DUPLICATE
    assert len(h.signer.calls) == 1


async def test_same_admin_target_decided_after_the_sign_out_is_signed_out_again() -> None:
    h = harness()
    await h.handle(admin_request("e-1"))
    h.clock.advance(5)
    later = await h.handle(admin_request("e-2", requested_at=_iso(NOW + 2)))
    assert (later.outcome, later.reason) == (Outcome.SIGNED_OUT, Reason.ADMIN_SIGN_OUT)
    undated = await h.handle(admin_request("e-3"))  # no requested_at, no record timestamp
    assert undated.outcome is Outcome.SIGNED_OUT
    assert keys(h.signer.calls) == [ADMIN_KEY] * 3


async def test_same_token_signed_out_already_covers_an_earlier_request() -> None:
    h = harness()
    await h.handle(token_request("e-1"))
    h.clock.advance(1)
    result = await h.handle(token_request("e-2", requested_at=_iso(NOW - 30)))
    assert result.outcome is Outcome.DUPLICATE
    assert len(h.signer.calls) == 1


async def test_another_user_is_not_covered() -> None:
    h = harness()
    await h.handle(admin_request("e-1", username="alice"))
    result = await h.handle(admin_request("e-2", username="bob", requested_at=_iso(NOW - 60)))
    assert result.outcome is Outcome.SIGNED_OUT


async def test_dedup_window_zero_disables_duplicates() -> None:
    h = harness(settings=_settings(window_seconds=0))
    await h.handle(token_request("e-1"))
    again = await h.handle(token_request("e-1"))
    assert again.outcome is Outcome.SIGNED_OUT
    assert len(h.signer.calls) == 2


async def test_a_permanently_failed_event_can_be_handled_again() -> None:
    h = harness(ScriptedSigner({ADMIN_KEY: [user_not_found(), None]}))
    first = await h.handle(admin_request("e-1"))
    assert (first.outcome, first.reason) == (Outcome.DEAD_LETTERED, Reason.USER_NOT_FOUND)
    second = await h.handle(admin_request("e-1"))
    assert (second.outcome, second.reason) == (Outcome.SIGNED_OUT, Reason.ADMIN_SIGN_OUT)
    assert len(h.signer.calls) == 2


async def test_a_locally_refused_event_can_be_handled_again() -> None:
    h = harness()
    await h.handle(token_request("e-1", token=EXPIRED))
    result = await h.handle(token_request("e-1"))
    assert result.outcome is Outcome.SIGNED_OUT


async def test_a_crashing_signer_releases_the_event() -> None:
    h = harness()
    crashing: Signer = RaisingSigner(RuntimeError("bug"))
    h.handler._signer = crashing  # the same handler, now with a broken seam
    failed = await h.handle(token_request("e-1"))
    assert (failed.outcome, failed.reason) == (Outcome.DEAD_LETTERED, Reason.INTERNAL_ERROR)
    h.handler._signer = h.signer
    result = await h.handle(token_request("e-1"))
    assert result.outcome is Outcome.SIGNED_OUT
    assert h.sink.dead_letter_calls == 1


async def test_a_cancelled_record_releases_the_event() -> None:
    h = harness()
    task = await _held_in_flight(h, "e-1", asyncio.Event())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del h.signer.during[TOKEN_KEY]
    result = await h.handle(token_request("e-1"))
    assert result.outcome is Outcome.SIGNED_OUT
    assert [r for _, r in h.sink.reports] == [result]  # the cancelled one was never reported


# -- retries -----------------------------------------------------------------------------------


async def test_retryable_errors_then_success() -> None:
    forbidden = _err("ForbiddenException", "Request not allowed due to WAF block.")
    h = harness(ScriptedSigner({TOKEN_KEY: [internal(), forbidden, _err("Mystery"), None]}))
    result = await h.handle(token_request())
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT)
    assert result.attempts == 4
    assert len(h.sleep.delays) == 3
    assert h.limiter.acquired == 4
    assert h.limiter.successes == 1
    retries = h.metrics.registry.get_sample_value
    assert retries("signout_retries_total", {"code": "InternalErrorException"}) == 1
    assert retries("signout_retries_total", {"code": "ForbiddenException"}) == 1


def _other_traffic(h: Harness) -> Callable[[], Awaitable[None]]:
    """While the failing call is in flight, another user's request is signed out."""
    ids = count()

    async def one() -> None:
        result = await h.handle(admin_request(f"other-{next(ids)}", username="bob"))
        assert result.outcome is Outcome.SIGNED_OUT

    return one


@pytest.mark.parametrize("max_attempts", [1, 3, 10])
async def test_retries_exhausted_after_exactly_max_attempts_while_others_succeed(
    max_attempts: int,
) -> None:
    signer = ScriptedSigner(forever={TOKEN_KEY: internal})
    h = harness(signer, settings=_settings(max_attempts=max_attempts))
    signer.during[TOKEN_KEY] = _other_traffic(h)
    rec = record(token_request("e-1"))
    result = await h.handler.handle(rec)
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.RETRIES_EXHAUSTED)
    assert result.attempts == max_attempts
    assert signer.calls_for(TOKEN_KEY) == max_attempts
    assert result.error is not None
    assert result.error.code == "InternalErrorException"
    assert TOKEN not in str(result.error)
    assert h.sink.acked == [(rec, result)]
    assert h.dlq("retries_exhausted") == 1
    assert len(h.sleep.delays) == max_attempts


async def test_an_outage_does_not_exhaust_retries() -> None:
    max_attempts = 3
    failures = [internal() for _ in range(4 * max_attempts)]
    signer = ScriptedSigner({TOKEN_KEY: [*failures, None]})
    h = harness(signer, settings=_settings(max_attempts=3))

    async def others_fail_too() -> None:  # another request's call fails meanwhile; none succeed
        h.handler.outage.failure()

    signer.during[TOKEN_KEY] = others_fail_too
    result = await h.handle(token_request())
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT)
    assert result.attempts == len(failures) + 1
    assert h.sink.dead_letter_calls == 0


async def test_a_request_failing_alone_is_exhausted_after_max_attempts() -> None:
    signer = ScriptedSigner(forever={TOKEN_KEY: internal})
    h = harness(signer, settings=_settings(max_attempts=4))
    result = await h.handle(token_request())
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.RETRIES_EXHAUSTED)
    assert result.attempts == signer.calls_for(TOKEN_KEY) == 4


async def test_throttling_slows_the_limiter_and_does_not_count_towards_exhaustion() -> None:
    max_attempts = 3
    throttles = [throttled() for _ in range(5 * max_attempts)]
    signer = ScriptedSigner({TOKEN_KEY: [*throttles, None]})
    h = harness(signer, settings=_settings(max_attempts=max_attempts))
    signer.during[TOKEN_KEY] = _other_traffic(h)  # Cognito healthy otherwise: failures would count
    result = await h.handle(token_request())
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT)
    assert result.attempts == len(throttles) + 1
    assert h.limiter.throttled == len(throttles)
    assert h.sleep.delays == []  # the limiter paces a throttled retry, not a backoff
    code = {"code": "TooManyRequestsException"}
    assert h.metrics.registry.get_sample_value("signout_retries_total", code) == len(throttles)


async def test_every_attempt_acquires_one_limiter_token() -> None:
    signer = ScriptedSigner({TOKEN_KEY: [internal(), revoked()], ADMIN_KEY: [throttled(), None]})
    h = harness(signer)
    result = await h.handle(both_request())
    assert (result.outcome, result.reason) == (Outcome.SIGNED_OUT, Reason.ADMIN_FALLBACK)
    assert result.attempts == 4
    assert len(h.signer.calls) == 4
    assert h.limiter.acquired == 4
    assert h.limiter.throttled == 1
    assert h.limiter.successes == 1


async def test_retried_and_successful_attempts_mark_liveness() -> None:
    h = harness(ScriptedSigner({TOKEN_KEY: [internal(), throttled(), None]}))
    await h.handle(token_request())
    assert h.progress.marks == 3


async def test_backoff_delays_are_full_jitter_within_the_exponential_ceiling() -> None:
    base, cap = 0.1, 1.5
    failures = [internal() for _ in range(12)]
    h = harness(
        ScriptedSigner({TOKEN_KEY: [*failures, None]}),
        settings=_settings(base_delay=base, max_delay=cap, max_attempts=20),
    )
    await h.handle(token_request())
    assert len(h.sleep.delays) == len(failures)
    for n, delay in enumerate(h.sleep.delays, start=1):
        assert 0 <= delay <= min(cap, base * 2 ** (n - 1))
    assert len(set(h.sleep.delays)) > 1  # jittered, not constant


class _Highest(random.Random):
    """Always the top of the range: shows the ceilings themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_backoff_ceilings_double_up_to_the_maximum() -> None:
    failures = [internal() for _ in range(6)]
    h = harness(
        ScriptedSigner({TOKEN_KEY: [*failures, None]}),
        settings=_settings(base_delay=0.2, max_delay=2.0, max_attempts=20),
        rng=_Highest(),
    )
    await h.handle(token_request())
    assert h.sleep.delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


# -- the dead-letter write ---------------------------------------------------------------------


async def test_dead_letter_write_is_retried_until_acknowledged() -> None:
    sink = FakeSink(dead_letter_failures=2)
    h = harness(sink=sink)
    rec = record(b"garbage")
    result = await h.handler.handle(rec)
    assert result.reason is Reason.INVALID_PAYLOAD
    assert sink.dead_letter_calls == 3
    assert sink.acked == [(rec, result)]
    assert h.sleep.delays == [1.0, 2.0]
    assert h.dlq("invalid_payload") == 1  # counted once, when acknowledged


async def test_handle_returns_only_after_the_dead_letter_is_acknowledged() -> None:
    sink = FakeSink(dead_letter_failures=2)
    sink.gate = asyncio.Event()
    h = harness(sink=sink)
    task = asyncio.create_task(h.handle(b"garbage"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()
    assert sink.acked == []
    sink.gate.set()
    result = await task
    assert result.outcome is Outcome.DEAD_LETTERED
    assert sink.dead_letter_calls == 3
    assert len(sink.acked) == 1


async def test_a_failing_results_write_does_not_change_the_outcome() -> None:
    h = harness(sink=FakeSink(report_failures=1))
    result = await h.handle(token_request())
    assert result.outcome is Outcome.SIGNED_OUT
    assert h.sink.reports == []
    assert h.events("signed_out", "global_sign_out") == 1


# -- secrets and tracing -----------------------------------------------------------------------


async def test_the_token_never_reaches_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echoing = _err("NotAuthorizedException", f"Invalid Access Token {TOKEN}")
    h = harness(ScriptedSigner({TOKEN_KEY: [echoing]}, forever={}), sink=FakeSink(1, 1))
    await h.handle(token_request("e-1"), headers=(("traceparent", TRACEPARENT.encode()),))
    await h.handle(token_request("e-2", token=OTHER_TOKEN))
    assert caplog.records
    for entry in caplog.records:
        assert TOKEN not in entry.getMessage()
        assert TOKEN not in repr(entry.__dict__)
    outcomes = [r for r in caplog.records if r.getMessage() == "outcome"]
    assert [r.__dict__["reason"] for r in outcomes] == ["token_invalid", "global_sign_out"]
    assert outcomes[0].__dict__["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert outcomes[0].__dict__["target"] == fingerprint(TOKEN)
    assert outcomes[0].levelno == logging.WARNING


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TRACEPARENT, "4bf92f3577b34da6a3ce929d0e0e4736"),
        (None, None),
        ("", None),
        ("00-short-00f067aa0ba902b7-01", None),
        ("garbage", None),
    ],
)
def test_trace_id(header: str | None, expected: str | None) -> None:
    assert trace_id(header) == expected


async def test_a_record_the_client_could_not_decode_is_dead_lettered_without_a_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness()
    flagged = Record(
        "signout.requests",
        5,
        77,
        b"alice",
        _json(token_request()),
        (("\\xff", b"h"),),
        undecodable="header key is not valid UTF-8",
    )
    with caplog.at_level(logging.ERROR, logger="worker.handler"):
        result = await h.handler.handle(flagged)
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD)
    assert result.error is not None
    assert result.error.message == "header key is not valid UTF-8"
    assert h.signer.calls == []
    assert h.sink.dead_letter_calls == 1
    assert h.metrics.registry.get_sample_value("signout_undecodable_records_total") == 1
    line = next(r for r in caplog.records if r.message == "undecodable record")
    assert (line.levelno, line.partition, line.offset) == (logging.ERROR, 5, 77)  # type: ignore[attr-defined]


class EmptyParking:
    """A `Parking` that is a sized collection, empty (falsy) like a window with nothing in it."""

    def __init__(self) -> None:
        self.entered = 0

    def __len__(self) -> int:
        return 0

    @contextlib.contextmanager
    def parked(self, budget: object = None) -> Iterator[None]:
        self.entered += 1
        yield


class ReadyLimiter(FakeLimiter):
    """A limiter whose slot has always come: `try_acquire` grants, `acquire` is never needed."""

    def try_acquire(self, urgent: bool = False) -> bool:
        return True


@pytest.mark.parametrize(("limiter", "parked"), [(ReadyLimiter(), 0), (FakeLimiter(), 1)])
async def test_a_record_is_parked_only_when_it_must_wait_for_its_budget(
    limiter: FakeLimiter, parked: int
) -> None:
    """A wait is parked even when the window is empty (a sized collection, falsy then)."""
    settings = _settings()
    parking = EmptyParking()
    signer = ScriptedSigner()
    handler = Handler(
        signer,
        FakeSink(),
        limiter,
        Metrics(),
        parking=parking,
        retry=settings.retry,
        dedup=settings.dedup,
        admin_enabled=settings.cognito.admin_enabled,
        progress=FakeProgress(),
        wall_clock=FakeClock(NOW),
        sleep=FakeSleep(),
    )
    result = await handler.handle(record(token_request()))
    assert result.outcome is Outcome.SIGNED_OUT
    assert len(signer.calls) == 1
    assert parking.entered == parked
    assert limiter.acquired == parked  # the waiting path only when the slot had not come


def test_budget_of_tells_a_records_budget_without_a_call_or_none() -> None:
    h = harness()
    key = h.handler.budget_of(record(admin_request()))
    assert key is not None
    assert key.region == "us-east-1"
    assert h.handler.budget_of(record(b"not json")) is None
    assert h.handler.budget_of(record(None)) is None
    assert h.signer.calls == []


class _RouterFailing:
    """A `Routes` whose route raises what it is given (a bug, or a cancellation)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def route(self, target: Target) -> Any:
        raise self.error


async def test_a_bug_behind_budget_of_is_met_again_by_handle_and_ends_as_internal_error() -> None:
    h = harness()
    h.handler._router = _RouterFailing(RuntimeError("bug"))  # the same handler, a broken seam
    rec = record(token_request("e-1"))
    assert h.handler.budget_of(rec) is None  # only a hint: the window starts the record
    result = await h.handler.handle(rec)
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, Reason.INTERNAL_ERROR)
    assert h.sink.dead_letter_calls == 1
    assert h.signer.calls == []


def test_budget_of_never_swallows_a_cancellation() -> None:
    h = harness()
    h.handler._router = _RouterFailing(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        h.handler.budget_of(record(token_request("e-1")))
