"""Bounded start-up: the cluster check before consuming, and the deadline around every start call.

`check_cluster` opens one connection of its own (TLS and SASL as configured) and asks for the
metadata of exactly the topics the worker uses, with auto-creation refused: brokers with
`auto.create.topics.enable=true` would otherwise create a mistyped topic on the spot. Failures
that retrying cannot fix (TLS, authentication, a missing topic) end at once; an unreachable
cluster is retried until the deadline. Every failure is a `StartupError`: one line, an exit code,
never the password. `bounded` runs a start step until done, the stop event, or the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiokafka import errors
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.protocol.metadata import MetadataRequest

from worker.connection import client_options
from worker.settings import KafkaSettings

log = logging.getLogger(__name__)

EXIT_SETTINGS = 2
EXIT_CLUSTER = 1
RETRY_SECONDS = 1.0
# A topic created a moment ago may not be in every broker's metadata yet: ask twice more.
MISSING_TOPIC_RETRIES = 2
T = TypeVar("T")


class StartupError(Exception):
    """Start-up cannot go on: `str()` is the one line to print, `exit_code` the process's."""

    def __init__(self, line: str, exit_code: int = EXIT_CLUSTER) -> None:
        super().__init__(line)
        self.exit_code = exit_code


class Connection(Protocol):
    def send(self, request: Any) -> Awaitable[Any]: ...
    def close(self) -> object: ...


Connect = Callable[..., Awaitable[Connection]]


class Deadline:
    """Seconds left of one start-up budget."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())


async def bounded(
    step: Awaitable[T], stop: asyncio.Event, deadline: Deadline | None, what: str = "start-up"
) -> T | None:
    """`step`'s result; None when `stop` is set first; StartupError once the deadline passes.

    Without a deadline only the stop event bounds it (for a step that keeps its own).
    """
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {task, stopped},
            timeout=deadline.remaining() if deadline else None,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        stopped.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if stop.is_set() or deadline is None:
        return None
    raise StartupError(f"{what} did not finish within {deadline.seconds:g}s")


async def check_cluster(
    kafka: KafkaSettings,
    topics: dict[str, str],
    deadline: Deadline,
    connect: Connect = create_conn,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Return once a broker said every topic exists; else StartupError.

    `topics` maps the variable that names each topic to its name (`KafkaSettings.topics()`).
    """
    options = {k: v for k, v in client_options(kafka).items() if k != "bootstrap_servers"}
    options["request_timeout_ms"] = max(1, int(deadline.remaining() * 1000))
    hosts = [(host, port) for host, port, _ in collect_hosts(kafka.bootstrap_servers, False)]
    ask = _Ask(connect, options, kafka, list(topics.values()))
    problem = ""
    patience = MISSING_TOPIC_RETRIES
    try:
        async with asyncio.timeout(deadline.remaining()):
            while True:
                for host, port in hosts:
                    response, problem = await ask(host, port, problem)
                    if response is None:
                        continue
                    missing = _missing(response, topics)
                    if not missing or patience <= 0:
                        _require_topics(response, topics)
                        return
                    patience -= 1
                    problem = f"topic {missing[0]} not known yet"
                    break
                await sleep(RETRY_SECONDS)
    except TimeoutError:
        servers = ",".join(f"{host}:{port}" for host, port in hosts)
        raise StartupError(
            f"kafka: no broker reachable at {servers} within {deadline.seconds:g}s "
            f"({problem or 'no answer'})"
        ) from None


class _Ask:
    """One metadata round trip to one broker over a connection of its own."""

    def __init__(
        self, connect: Connect, options: dict[str, Any], kafka: KafkaSettings, topics: list[str]
    ) -> None:
        self._connect = connect
        self._options = options
        self._kafka = kafka
        self._topics = topics

    async def __call__(self, host: str, port: int, last_problem: str) -> tuple[Any, str]:
        """The response, or None and what went wrong (logged when it differs from the last)."""
        try:
            conn = await self._connect(host, port, **self._options)
        except Exception as exc:
            problem = _refusal(exc, host, port, self._kafka)
            if problem != last_problem:
                log.warning("kafka not reachable yet; retrying", extra={"cause": problem})
            return None, problem
        try:
            # Named topics with auto-creation refused: the check never creates a topic.
            request = MetadataRequest(self._topics, allow_auto_topic_creation=False)
            return await conn.send(request), last_problem
        except (errors.KafkaError, OSError) as exc:
            return None, f"{host}:{port}: {_transient(exc)}"
        finally:
            conn.close()


def _refusal(exc: Exception, host: str, port: int, kafka: KafkaSettings) -> str:
    """Raise StartupError for what retrying cannot fix; otherwise describe the transient cause."""
    at = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or "certificate verify failed"
        raise StartupError(
            f"kafka: TLS handshake with {at} failed: certificate verify failed: {reason} "
            "(SIGNOUT_KAFKA__SSL_CAFILE)"
        )
    if isinstance(exc, ssl.SSLError) or _closed_on_hello(exc):
        raise StartupError(
            f"kafka: {at} closed the connection during the handshake: not a "
            f"{kafka.security_protocol} listener? (SIGNOUT_KAFKA__SECURITY_PROTOCOL)"
        )
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        raise StartupError(
            f"kafka: {at} does not offer SASL {_mechanism(kafka)} (SIGNOUT_KAFKA__SASL_MECHANISM)"
        )
    if isinstance(exc, errors.IllegalSaslStateError):
        raise StartupError(
            f"kafka: {at} does not accept SASL on this port (SIGNOUT_KAFKA__SECURITY_PROTOCOL)"
        )
    if isinstance(exc, errors.SaslAuthenticationFailed | errors.AuthenticationFailedError):
        raise StartupError(f"kafka: authentication failed ({_identity(kafka)})")
    return f"{at}: {_transient(exc)}"


def _closed_on_hello(exc: Exception) -> bool:
    """The broker hung up on the first request: a protocol mismatch (TLS vs plaintext)."""
    closed = isinstance(exc, errors.KafkaConnectionError) and str(exc).endswith(" closed")
    return closed or isinstance(exc, ConnectionResetError)


def _transient(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | errors.KafkaTimeoutError):
        return "no answer"
    return type(exc).__name__


def _mechanism(kafka: KafkaSettings) -> str:
    return kafka.sasl_mechanism or "PLAIN"


def _identity(kafka: KafkaSettings) -> str:
    if _mechanism(kafka) == "OAUTHBEARER":
        return "SASL OAUTHBEARER, MSK IAM"
    return f'SASL {_mechanism(kafka)} as "{kafka.sasl_username}"'


def _missing(response: Any, named: dict[str, str]) -> list[str]:
    """Topics the broker does not know (yet: a topic just created may take a moment to show)."""
    known = {topic[1] for topic in response.topics if topic[0] == 0}
    unknown = errors.UnknownTopicOrPartitionError.errno
    codes = {topic[1]: topic[0] for topic in response.topics}
    return [n for n in named.values() if n not in known and codes.get(n, unknown) == unknown]


def _require_topics(response: Any, named: dict[str, str]) -> None:
    by_name = {topic[1]: topic[0] for topic in response.topics}
    problems = [
        _topic_problem(name, variable, by_name.get(name, errors.UnknownTopicOrPartitionError.errno))
        for variable, name in named.items()
    ]
    refused = [problem for problem in problems if problem is not None]
    if refused:
        exit_code = EXIT_SETTINGS if any("not a valid" in p for p in refused) else EXIT_CLUSTER
        raise StartupError("; ".join(refused), exit_code)


def _topic_problem(name: str, variable: str, code: int) -> str | None:
    if code in (0, errors.LeaderNotAvailableError.errno):  # exists (maybe still electing)
        return None
    if code == errors.UnknownTopicOrPartitionError.errno:
        return f'kafka: topic "{name}" does not exist ({variable})'
    if code == errors.TopicAuthorizationFailedError.errno:
        return f'kafka: not authorized to describe topic "{name}" ({variable})'
    if code == errors.InvalidTopicError.errno:
        return f'kafka: topic name "{name}" is not a valid name ({variable})'
    return f'kafka: topic "{name}" unusable: {_error_name(code)} ({variable})'


def _error_name(code: int) -> str:
    return str(getattr(errors.for_code(code), "message", code))
