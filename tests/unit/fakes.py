"""In-memory fakes for the seams (`Signer`, `DeadLetterSink`, `Limiter`, `Progress`, the DLQ
producers and their health), clocks and JWTs.

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
from dataclasses import dataclass
from typing import Any

from worker.errors import SignOutError
from worker.events import Target
from worker.records import Record, Result
from worker.routing import BudgetKey, Route

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

    async def sign_out(self, target: Target, route: Route | None = None) -> None:
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

    async def sign_out(self, target: Target, route: Route | None = None) -> None:
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
    """A `Limiter` (and its own `Budgets`) that never waits and counts what the handler told it."""

    def __init__(self) -> None:
        self.acquired = 0
        self.urgent = 0
        self.throttled = 0
        self.successes = 0
        self.done = 0
        self.keys: list[BudgetKey] = []

    def limiter(self, key: BudgetKey) -> FakeLimiter:
        self.keys.append(key)
        return self

    def try_acquire(self, urgent: bool = False) -> bool:
        """Always the waiting path (`acquire`), which returns at once: parking is exercised."""
        return False

    async def acquire(self, urgent: bool = False) -> float:
        self.acquired += 1
        self.urgent += urgent
        return 0.0

    def on_done(self) -> None:
        self.done += 1

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


class FakeProgress:
    """A `Progress` that counts the marks and calls `then` on each (to see when they happen)."""

    def __init__(self, then: Callable[[], object] | None = None) -> None:
        self.marks = 0
        self._then = then

    def progressed(self) -> None:
        self.marks += 1
        if self._then is not None:
            self._then()


class FakeDeadLetterHealth:
    """A `DeadLetterHealth` that keeps every report in order."""

    def __init__(self) -> None:
        self.reports: list[bool] = []

    @property
    def failing(self) -> bool:
        return bool(self.reports) and self.reports[-1]

    def dead_letters_failing(self, failing: bool) -> None:
        self.reports.append(failing)


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class FakeProducer:
    """A `Producer` that acknowledges or fails each send as its shared `FakeBroker` says."""

    def __init__(self, broker: FakeBroker, number: int) -> None:
        self.broker = broker
        self.number = number
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        if self.broker.refuse_start:
            raise ConnectionError("bootstrap failed")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        # aiokafka refuses a record with neither key nor value in the same way.
        assert key is not None or value is not None, "Need at least one: key or value"
        if self.number in self.broker.crashed:
            raise self.broker.crash_error()  # a dead sender task: raised by send() itself
        sent = Sent(topic, key, value, list(headers or []))
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in sent.headers)
        if size > self.broker.max_request_size:
            raise self.broker.client_too_large()  # refused before queuing, like aiokafka
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        error = self.broker.verdict(self, sent, size)
        if error is None:
            self.broker.log.append(sent)
        # Acknowledged a moment later, as over the network: other sends can queue meanwhile.
        asyncio.get_running_loop().call_soon(_settle, delivery, error)
        return delivery


def _settle(delivery: asyncio.Future[None], error: Exception | None) -> None:
    if error is None:
        delivery.set_result(None)
    else:
        delivery.set_exception(error)


class FakeBroker:
    """What the producers talk to: a message size limit, a poisoned flag, scripted failures.

    Like an idempotent producer against a real broker, a producer whose batch was refused for good
    is poisoned: every later send through it fails with `poisoned_error` until it is replaced.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = 1_000_000,
        max_request_size: int = 10_000_000,
        too_large: Callable[[], Exception],
        poisoned_error: Callable[[], Exception],
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_request_size = max_request_size
        self.client_too_large = too_large
        self._too_large = too_large
        self._poisoned_error = poisoned_error
        self.failures: deque[Exception] = deque()  # raised by the next sends, then acks again
        self.poisoned: set[int] = set()
        self.crashed: set[int] = set()  # producers whose sender task died
        self.crash_error: Callable[[], Exception] = lambda: RuntimeError("sender task died")
        self.producers: list[FakeProducer] = []
        self.log: list[Sent] = []
        self.refuse_start = False

    def make(self) -> FakeProducer:
        producer = FakeProducer(self, len(self.producers))
        self.producers.append(producer)
        return producer

    def verdict(self, producer: FakeProducer, sent: Sent, size: int) -> Exception | None:
        if producer.number in self.poisoned:
            return self._poisoned_error()
        if self.failures:
            error = self.failures.popleft()
        elif size > self.max_message_bytes:
            error = self._too_large()
        else:
            return None
        self.poisoned.add(producer.number)
        return error
