"""startup.py: what each cluster answer becomes (one line, an exit code); the stop and deadline."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from aiokafka import errors

from worker.settings import KafkaSettings
from worker.startup import Deadline, StartupError, bounded, check_cluster


class FakeResponse:
    def __init__(self, codes: dict[str, int]) -> None:
        self.topics = [(code, name, False, []) for name, code in codes.items()]


class FakeConnection:
    def __init__(self, codes: dict[str, int]) -> None:
        self.codes = codes
        self.requests: list[Any] = []
        self.closed = False

    async def send(self, request: Any) -> FakeResponse:
        self.requests.append(request)
        return FakeResponse(self.codes)

    def close(self) -> None:
        self.closed = True


class FakeCluster:
    """Answers each connection attempt with the next outcome: an exception or topic codes."""

    def __init__(self, *outcomes: BaseException | dict[str, int]) -> None:
        self.outcomes = list(outcomes)
        self.attempts: list[tuple[str, int]] = []
        self.connections: list[FakeConnection] = []

    async def connect(self, host: str, port: int, **options: Any) -> FakeConnection:
        self.attempts.append((host, port))
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        conn = FakeConnection(outcome)
        self.connections.append(conn)
        return conn


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


KAFKA = KafkaSettings(bootstrap_servers="k1:9092")
SASL = KafkaSettings(
    bootstrap_servers="k1:9092",
    security_protocol="SASL_PLAINTEXT",
    sasl_username="alice",
    sasl_password="s3cret-password",  # type: ignore[arg-type]
)
ALL_THERE = {"signout.requests": 0, "signout.requests.dlq": 0}


async def check(cluster: FakeCluster, kafka: KafkaSettings = KAFKA, seconds: float = 5) -> None:
    await check_cluster(kafka, kafka.topics(), Deadline(seconds), cluster.connect, no_sleep)


async def test_existing_topics_pass_and_the_request_refuses_auto_creation() -> None:
    cluster = FakeCluster(ALL_THERE)
    await check(cluster)
    (conn,) = cluster.connections
    (request,) = conn.requests
    assert request._topics == ["signout.requests", "signout.requests.dlq"]
    assert request._allow_auto_topic_creation is False
    assert conn.closed


async def test_a_refused_connection_is_retried_until_the_cluster_answers() -> None:
    cluster = FakeCluster(ConnectionRefusedError(), ConnectionRefusedError(), ALL_THERE)
    await check(cluster)
    assert len(cluster.attempts) == 3


@pytest.mark.parametrize(
    ("codes", "line", "code"),
    [
        (
            {"signout.requests": 3, "signout.requests.dlq": 0},
            'kafka: topic "signout.requests" does not exist (SIGNOUT_KAFKA__TOPIC)',
            1,
        ),
        (
            {"signout.requests": 0, "signout.requests.dlq": 29},
            'kafka: not authorized to describe topic "signout.requests.dlq" '
            "(SIGNOUT_KAFKA__DLQ_TOPIC)",
            1,
        ),
        (
            {"signout.requests": 17, "signout.requests.dlq": 0},
            'kafka: topic name "signout.requests" is not a valid name (SIGNOUT_KAFKA__TOPIC)',
            2,
        ),
        (
            {"signout.requests": 0},  # left out of the answer: not there
            'kafka: topic "signout.requests.dlq" does not exist (SIGNOUT_KAFKA__DLQ_TOPIC)',
            1,
        ),
    ],
)
async def test_topic_answers_become_one_line(codes: dict[str, int], line: str, code: int) -> None:
    with pytest.raises(StartupError) as caught:
        await check(FakeCluster(codes))
    assert str(caught.value) == line
    assert caught.value.exit_code == code


async def test_a_topic_still_electing_its_leader_exists() -> None:
    await check(FakeCluster({"signout.requests": 5, "signout.requests.dlq": 0}))


@pytest.mark.parametrize(
    ("failure", "line"),
    [
        (
            errors.SaslAuthenticationFailed("Authentication failed: Invalid username or password"),
            'kafka: authentication failed (SASL PLAIN as "alice")',
        ),
        (
            errors.UnsupportedSaslMechanismError("no"),
            "kafka: k1:9092 does not offer SASL PLAIN (SIGNOUT_KAFKA__SASL_MECHANISM)",
        ),
        (
            errors.KafkaConnectionError("Connection at k1:9092 closed"),
            "kafka: k1:9092 closed the connection during the handshake: not a SASL_PLAINTEXT "
            "listener? (SIGNOUT_KAFKA__SECURITY_PROTOCOL)",
        ),
    ],
)
async def test_what_retrying_cannot_fix_fails_at_once(failure: Exception, line: str) -> None:
    cluster = FakeCluster(failure)
    with pytest.raises(StartupError) as caught:
        await check(cluster, SASL)
    assert str(caught.value) == line
    assert caught.value.exit_code == 1
    assert "s3cret-password" not in str(caught.value)
    assert len(cluster.attempts) == 1


async def test_a_certificate_the_ca_does_not_sign_names_the_ca_setting() -> None:
    failure = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure.verify_message = "unable to get local issuer certificate"
    with pytest.raises(
        StartupError, match=r"unable to get local issuer certificate \(SIGNOUT_KAFKA__SSL_CAFILE\)$"
    ):
        await check(FakeCluster(failure))


async def test_an_unreachable_cluster_fails_at_the_deadline_naming_the_last_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster(ConnectionRefusedError())
    with pytest.raises(StartupError) as caught:
        await check(cluster, seconds=0.2)
    assert str(caught.value) == (
        "kafka: no broker reachable at k1:9092 within 0.2s (k1:9092: connection refused)"
    )
    assert len(cluster.attempts) > 3
    waiting = [r for r in caplog.records if r.name == "worker.startup"]
    assert len(waiting) == 1  # one line for the one state, however many attempts


async def test_bounded_returns_the_result_none_when_stopped_and_fails_at_the_deadline() -> None:
    stop = asyncio.Event()
    assert await bounded(asyncio.sleep(0, "done"), stop, Deadline(5)) == "done"

    hang = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await bounded(hang, stop, None) is None
    assert hang.cancelled()

    with pytest.raises(StartupError, match=r"^kafka: starting did not finish within 0.05s$"):
        await bounded(asyncio.sleep(10), asyncio.Event(), Deadline(0.05), "kafka: starting")
