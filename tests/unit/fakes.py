"""In-memory fakes for the handler's seams (`Signer`, `DeadLetterSink`, `Limiter`), clocks and JWTs.

Each fake records what it was asked to do so that tests can assert on calls, and none waits for
real time: sleeps only record the delay (and advance a fake clock when given one).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from worker.errors import SignOutError
from worker.events import Target
from worker.records import Record, Result

# A step of a scripted signer: None signs out, an error is raised.
Step = SignOutError | None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(exp: Any = None, *, header: Any = None, **claims: Any) -> str:
    """A structurally valid, unsigned-looking JWT with the given claims (exp omitted when None)."""
    payload: dict[str, Any] = {"sub": "5f1c0a4e-user", "token_use": "access", **claims}
    if exp is not None:
        payload["exp"] = exp
    head = header if header is not None else {"alg": "RS256", "kid": "test-key"}
    signature = _b64url(b"not-a-real-signature-but-long-enough-to-look-like-one")
    return ".".join(
        (_b64url(json.dumps(head).encode()), _b64url(json.dumps(payload).encode()), signature)
    )


class ScriptedSigner:
    """A `Signer` whose answers are scripted per target key, in order.

    When a target's script runs out, `forever` (a factory of errors per target key) decides;
    without an entry there, the call succeeds.
    """

    def __init__(
        self,
        script: Mapping[str, Iterable[Step]] | None = None,
        forever: Mapping[str, Callable[[], SignOutError]] | None = None,
    ) -> None:
        self._script = {key: deque(steps) for key, steps in (script or {}).items()}
        self._forever = dict(forever or {})
        self.calls: list[Target] = []
        self.signed_out: list[Target] = []
        # Awaited while a call for that target key is "in flight" (other work happens meanwhile).
        self.during: dict[str, Callable[[], Awaitable[object]]] = {}

    async def sign_out(self, target: Target) -> None:
        self.calls.append(target)
        meanwhile = self.during.get(target.key)
        if meanwhile is not None:
            await meanwhile()
        steps = self._script.get(target.key)
        if steps:
            step = steps.popleft()
        else:
            factory = self._forever.get(target.key)
            step = factory() if factory is not None else None
        if step is not None:
            raise step
        self.signed_out.append(target)

    def calls_for(self, key: str) -> int:
        return sum(1 for target in self.calls if target.key == key)


class RaisingSigner:
    """A `Signer` that fails with an arbitrary exception (a bug, not a Cognito answer)."""

    def __init__(self, error: BaseException) -> None:
        self._error = error
        self.calls = 0

    async def sign_out(self, target: Target) -> None:
        self.calls += 1
        raise self._error


class FakeSink:
    """A `DeadLetterSink` that keeps what it was given; can fail or hold the ack on request."""

    def __init__(self, dead_letter_failures: int = 0, report_failures: int = 0) -> None:
        self._dead_letter_failures = dead_letter_failures
        self._report_failures = report_failures
        self.dead_letter_calls = 0
        self.acked: list[tuple[Record, Result]] = []
        self.reports: list[tuple[Record, Result]] = []
        self.gate: asyncio.Event | None = None

    async def dead_letter(self, record: Record, result: Result) -> None:
        self.dead_letter_calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self._dead_letter_failures > 0:
            self._dead_letter_failures -= 1
            raise ConnectionError("broker unavailable")
        self.acked.append((record, result))

    async def report(self, record: Record, result: Result) -> None:
        if self._report_failures > 0:
            self._report_failures -= 1
            raise ConnectionError("results topic unavailable")
        self.reports.append((record, result))


class FakeLimiter:
    """A `Limiter` that never waits and counts what the handler told it."""

    def __init__(self) -> None:
        self.acquired = 0
        self.throttled = 0
        self.successes = 0

    async def acquire(self) -> float:
        self.acquired += 1
        return 0.0

    def on_throttled(self) -> None:
        self.throttled += 1

    def on_success(self) -> None:
        self.successes += 1


class FakeClock:
    """A clock that only moves when told to (or when `sleep` is awaited)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        # Like a real clock, time moves on across any sleep, even one below the float resolution.
        self.now = max(self.now + seconds, math.nextafter(self.now, math.inf))


class FakeSleep:
    """Records every delay and returns at once, yielding to the loop; advances `clock` if given."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self._clock = clock
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self._clock is not None:
            self._clock.advance(delay)
        await asyncio.sleep(0)
