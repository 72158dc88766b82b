"""One record to one terminal outcome: decode, dedup, pre-flight, rate-limited retry loop, DLQ.

The handler knows nothing of Kafka or botocore: it sees a `Signer`, a `DeadLetterSink`, a
`Limiter` and a `Progress` (Protocols below), so unit tests pass in-memory fakes. It returns only
when the outcome is final; a dead letter counts as final only once the broker acknowledged it.

`handle` is the last-resort boundary of a record: whatever its decision raises (other than
cancellation) ends the record as an `internal_error` dead letter, keeping its value for replay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

from worker.dedup import RecentlySeen
from worker.errors import (
    INTERNAL_CODE,
    LOCAL_CODE,
    Outcome,
    PermanentError,
    Reason,
    RetryableError,
    SignOutError,
    ThrottledError,
    UnreachableError,
)
from worker.events import (
    AdminTarget,
    SignOutRequest,
    Target,
    TokenTarget,
    decode,
    preflight,
    request_time,
)
from worker.metrics import Metrics
from worker.outage import Mark, OutageDetector
from worker.records import Lane, Record, Result
from worker.routing import BudgetKey, Route, Router
from worker.settings import CognitoSettings, DedupSettings, RetrySettings

log = logging.getLogger(__name__)

_TOKEN_REFUSED = frozenset(
    {Reason.NOT_AUTHORIZED, Reason.TOKEN_REVOKED, Reason.TOKEN_EXPIRED, Reason.TOKEN_INVALID}
)


class Signer(Protocol):
    async def sign_out(self, target: Target, route: Route | None = None) -> None: ...


class DeadLetterSink(Protocol):
    async def dead_letter(self, record: Record, result: Result) -> None:
        """Publish and wait for the broker's acknowledgement; raise on failure."""

    async def report(self, record: Record, result: Result) -> None:
        """Publish to the optional results topic (best effort: may be a no-op)."""


class Limiter(Protocol):
    def try_acquire(self, urgent: bool = False) -> bool:
        """Take a slot that has come, without waiting; False when the request must wait."""

    async def acquire(self, urgent: bool = False) -> float: ...
    def on_throttled(self) -> None: ...
    def on_success(self) -> None: ...
    def on_done(self) -> None: ...


class Budgets(Protocol):
    def limiter(self, key: BudgetKey) -> Limiter:
        """The limiter of one (account, Region) budget."""


class Routes(Protocol):
    def route(self, target: Target) -> Route:
        """Where a target goes; a local `PermanentError` (token_invalid, pool_not_allowed…)."""


class Parking(Protocol):
    def parked(self, budget: BudgetKey | None = None) -> AbstractContextManager[None]:
        """Around a wait for a budget: the record gives up its window slot meanwhile."""


class _NoParking:
    def parked(self, budget: BudgetKey | None = None) -> AbstractContextManager[None]:
        return nullcontext()


class Progress(Protocol):
    def progressed(self) -> None:
        """The record is being worked on (Cognito or the DLQ tried): not a stall."""


Sleep = Callable[[float], Awaitable[None]]
# 2**62 times the base delay is beyond any sane max delay: the exponent stops growing there.
_MAX_EXPONENT = 62


@dataclass(slots=True)
class _Attempts:
    urgent: bool = False  # the record came on the urgent lane
    made: int = 0  # calls made for this record
    counted: int = 0  # failures that count toward retries_exhausted
    mark: Mark = field(default_factory=lambda: Mark(0, 0))  # counts after our last failure


class Handler:
    def __init__(
        self,
        signer: Signer,
        sink: DeadLetterSink,
        budgets: Budgets,
        metrics: Metrics,
        *,
        router: Routes | None = None,
        parking: Parking | None = None,
        urgent_topic: str | None = None,
        retry: RetrySettings,
        dedup: DedupSettings,
        admin_enabled: bool,
        progress: Progress,
        wall_clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._retry = retry
        self._admin_enabled = admin_enabled
        self._progress = progress
        self._signer = signer
        self._sink = sink
        self._budgets = budgets
        self._router = router or Router(CognitoSettings())
        # Not `parking or ...`: the window is a sized collection, falsy while it is empty.
        self._parking = parking if parking is not None else _NoParking()
        self._urgent_topic = urgent_topic
        self._metrics = metrics
        self._now = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._seen = RecentlySeen(dedup.window_seconds, dedup.max_entries)
        self.outage = OutageDetector()

    async def handle(self, record: Record) -> Result:
        """Bring one record to its terminal outcome (DLQ acknowledged when dead-lettered)."""
        started = time.monotonic()
        lane = Lane.URGENT if record.topic == self._urgent_topic else Lane.BULK
        try:
            result = await self._decide(record, lane)
        except Exception as exc:  # the worker's own failure: the record still ends, replayable
            result = _internal_error(record, exc)
        if result.lane is not lane:
            result = replace(result, lane=lane)
        if result.outcome is Outcome.DEAD_LETTERED:
            await self._dead_letter_until_acked(record, result)
        await self._report(record, result)
        self._account(record, result, time.monotonic() - started)
        return result

    def budget_of(self, record: Record) -> BudgetKey | None:
        """The budget a record's first call will wait for, or None: then the window starts the
        record as a task and `handle` decides it. A hint only, never an outcome."""
        if record.undecodable is not None:
            return None
        try:
            targets = _targets(decode(record.value))
            return self._router.route(targets[0]).budget
        except PermanentError:
            return None  # it ends without a call (invalid_payload, token_invalid, ...)
        except Exception:
            # The worker's own bug. Not swallowed: `handle` meets it again when the record runs
            # and ends it as internal_error (logged, counted, alerted). Raising here would break
            # the window's fill loop, which must keep starting the other records.
            return None

    def _account(self, record: Record, result: Result, seconds: float) -> None:
        """Metrics and the outcome line: a failure here must not undo a terminal outcome."""
        try:
            self._metrics.events_of(result.outcome, result.reason, result.lane).inc()
            if record.timestamp_ms >= 0:
                age = self._now() - record.timestamp_ms / 1000
                self._metrics.event_latency_of(result.lane).observe(max(0.0, age))
            _log_outcome(record, result, seconds)
        except Exception as exc:
            log.error("outcome accounting failed", extra={"error": type(exc).__name__})

    async def _decide(self, record: Record, lane: Lane) -> Result:
        if record.undecodable is not None:
            return self._undecodable(record, record.undecodable)
        try:
            request = decode(record.value)
        except PermanentError as exc:
            return Result(Outcome.DEAD_LETTERED, exc.reason, error=exc)
        if not self._seen.reserve(request.event_id, self._now()):
            return Result(Outcome.DUPLICATE, Reason.DUPLICATE_EVENT, request=request)
        try:
            result = await self._sign_out(request, record, _Attempts(urgent=lane is Lane.URGENT))
        except BaseException:
            self._seen.release(request.event_id)
            raise
        if result.outcome is not Outcome.SIGNED_OUT:
            self._seen.release(request.event_id)
        return result

    def _undecodable(self, record: Record, why: str) -> Result:
        """The client could not decode it: nothing to sign out, only what was recovered to keep."""
        log.error(
            "undecodable record",
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
        )
        self._metrics.undecodable.inc()
        error = PermanentError(Reason.INVALID_PAYLOAD, LOCAL_CODE, why)
        return Result(Outcome.DEAD_LETTERED, Reason.INVALID_PAYLOAD, error=error)

    async def _sign_out(
        self, request: SignOutRequest, record: Record, attempts: _Attempts
    ) -> Result:
        decided_at = request_time(request, record.timestamp_ms)
        targets = _targets(request)
        if any(self._seen.covered(t.key, decided_at, self._now()) for t in targets):
            return Result(Outcome.DUPLICATE, Reason.DUPLICATE_EVENT, request=request)
        token = next((t for t in targets if isinstance(t, TokenTarget)), None)
        admin = next((t for t in targets if isinstance(t, AdminTarget)), None)
        if token is None:
            return await self._admin(request, admin, attempts, Reason.ADMIN_SIGN_OUT)
        try:
            preflight(token, self._now())
            await self._call(token, attempts)
        except PermanentError as exc:
            if admin is None or exc.reason not in _TOKEN_REFUSED:
                return _dead(exc, attempts, request, token)
            return await self._admin(request, admin, attempts, Reason.ADMIN_FALLBACK)
        self._seen.signed_out(token.key, self._now())
        return Result(
            Outcome.SIGNED_OUT, Reason.GLOBAL_SIGN_OUT, attempts.made, None, request, token
        )

    async def _admin(
        self, request: SignOutRequest, admin: AdminTarget | None, attempts: _Attempts, ok: Reason
    ) -> Result:
        assert admin is not None  # noqa: S101 - SignOutRequest guarantees a target
        if not self._admin_enabled:
            error = PermanentError(Reason.ADMIN_DISABLED, LOCAL_CODE, "admin sign-out is disabled")
            return _dead(error, attempts, request, admin)
        try:
            await self._call(admin, attempts)
        except PermanentError as exc:
            return _dead(exc, attempts, request, admin)
        self._seen.signed_out(admin.key, self._now())
        return Result(Outcome.SIGNED_OUT, ok, attempts.made, None, request, admin)

    async def _call(self, target: Target, attempts: _Attempts) -> None:
        """The retry loop: every attempt waits for its budget; permanent errors propagate.

        The route is decided first, without a call: a local refusal spends no budget.
        """
        route = self._router.route(target)
        limiter = self._budgets.limiter(route.budget)
        last: SignOutError | None = None
        attempts.mark = self.outage.mark()
        while attempts.counted < self._retry.max_attempts:
            if limiter.try_acquire(attempts.urgent):
                waited = 0.0  # no wait: the record keeps its slot, nothing to park
            else:
                with self._parking.parked(route.budget):
                    waited = await limiter.acquire(attempts.urgent)
            self._metrics.limiter_wait_of(route.region).observe(waited)
            attempts.made += 1
            try:
                await self._signer.sign_out(target, route)
            except RetryableError as exc:
                self._progress.progressed()
                last = exc
                await self._after_retryable(exc, attempts, limiter)
                continue
            except PermanentError:
                limiter.on_done()
                raise
            self._progress.progressed()
            limiter.on_success()
            self.outage.success()
            return
        code = last.code if last else LOCAL_CODE
        message = f"gave up after {attempts.made} attempts; last error {code}"
        raise PermanentError(Reason.RETRIES_EXHAUSTED, code, message)

    async def _after_retryable(
        self, exc: RetryableError, attempts: _Attempts, limiter: Limiter
    ) -> None:
        self._metrics.retries.labels(code=exc.code).inc()
        if isinstance(exc, ThrottledError):
            limiter.on_throttled()  # busy, not broken: the limiter paces the retry
            return
        limiter.on_done()
        unreachable = isinstance(exc, UnreachableError)  # never reached Cognito: not the request
        if not unreachable and not self.outage.looks_down_since(attempts.mark):
            attempts.counted += 1  # others succeed (or there are none): this request's problem
        self.outage.failure()
        attempts.mark = self.outage.mark()  # taken after our own failure: only others move it
        await self._sleep(self._backoff(attempts.made))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, bounded for any attempt count."""
        retry = self._retry
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        ceiling = min(retry.max_delay_seconds, retry.base_delay_seconds * 2.0**exponent)
        return self._rng.uniform(0, ceiling)

    async def _dead_letter_until_acked(self, record: Record, result: Result) -> None:
        """Nothing is lost: until the DLQ write is acknowledged, the offset cannot move."""
        failures = 0
        while True:
            try:
                await self._sink.dead_letter(record, result)
            except Exception as exc:  # any broker failure: keep trying, never drop the record
                failures += 1
                self._progress.progressed()  # still working on it: a Kafka outage is not a stall
                log.warning(
                    "dead-letter write failed; retrying",
                    extra={
                        "error": type(exc).__name__,
                        "partition": record.partition,
                        "offset": record.offset,
                        "failures": failures,
                    },
                )
                await self._sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            self._metrics.dlq_records.labels(reason=result.reason).inc()
            return

    async def _report(self, record: Record, result: Result) -> None:
        try:
            await self._sink.report(record, result)
        except Exception as exc:  # the results topic is informational; the outcome stands
            log.warning("results write failed", extra={"error": type(exc).__name__})


def _log_outcome(record: Record, result: Result, seconds: float) -> None:
    """One line per terminal outcome; the target appears only as a fingerprint or a username."""
    fields: dict[str, object] = {
        "event_id": result.request.event_id if result.request else None,
        "partition": record.partition,
        "offset": record.offset,
        "outcome": result.outcome,
        "reason": result.reason,
        "attempts": result.attempts,
        "latency_seconds": round(seconds, 4),
        "trace_id": trace_id(record.header("traceparent")),
    }
    if isinstance(result.target, TokenTarget):
        fields["target"] = result.target.fingerprint
    elif isinstance(result.target, AdminTarget):
        fields["target"] = result.target.key
    if result.error is not None:
        fields["error_code"] = result.error.code
    level = logging.WARNING if result.outcome is Outcome.DEAD_LETTERED else logging.INFO
    log.log(level, "outcome", extra=fields)


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` header (version-traceid-parentid-flags)."""
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return None


def _targets(request: SignOutRequest) -> list[Target]:
    targets: list[Target] = []
    if request.access_token is not None:
        targets.append(TokenTarget(request.access_token))
    if request.user_pool_id is not None and request.username is not None:
        targets.append(AdminTarget(request.user_pool_id, request.username))
    return targets


def _internal_error(record: Record, exc: Exception) -> Result:
    """The worker failed on this record: say where (never the message, it may quote input)."""
    where = _raised_at(exc)
    log.error(
        "internal error on a record",
        extra={
            "error": type(exc).__name__,
            "at": where,
            "partition": record.partition,
            "offset": record.offset,
        },
    )
    error = PermanentError(Reason.INTERNAL_ERROR, INTERNAL_CODE, f"{type(exc).__name__} at {where}")
    return Result(Outcome.DEAD_LETTERED, Reason.INTERNAL_ERROR, error=error)


def _raised_at(exc: BaseException) -> str:
    """file:line of the frame that raised (the innermost one of the traceback)."""
    tb = exc.__traceback__
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def _dead(
    error: PermanentError, attempts: _Attempts, request: SignOutRequest, target: Target
) -> Result:
    return Result(Outcome.DEAD_LETTERED, error.reason, attempts.made, error, request, target)
