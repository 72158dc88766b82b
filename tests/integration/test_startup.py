"""Start-up against a real broker with PLAINTEXT, SASL_PLAINTEXT (PLAIN) and SSL listeners.

Each fault goes through the command as operators run it: the exit code, the one line it prints
last, no traceback, no password, and at most one log line per state change while it waits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import certifi
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack import broker as broker_launcher
from devstack.ports import free_port
from worker.settings import KafkaSettings
from worker.startup import Deadline, check_cluster

pytestmark = pytest.mark.integration

TOPIC = f"startup-{uuid.uuid4().hex[:8]}"
DLQ = f"{TOPIC}.dlq"


@dataclass
class Secured:
    plaintext: str
    sasl: str
    ssl: str
    ca_file: str
    user: str
    password: str


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs the local broker's SASL and SSL listeners")
    broker = broker_launcher.start(
        tmp_path_factory.mktemp("secured"), die_with_parent=True, secured=True
    )
    try:
        asyncio.run(_create_topics(broker.bootstrap, [TOPIC, DLQ]))
        yield Secured(
            broker.bootstrap,
            broker.sasl_bootstrap,
            broker.ssl_bootstrap,
            str(broker.ca_file),
            broker_launcher.SASL_USER,
            broker_launcher.SASL_PASSWORD,
        )
    finally:
        broker.stop()


async def _create_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1) for name in topics])
    finally:
        await admin.close()


async def _existing_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@dataclass
class Exit:
    code: int
    line: str
    logs: list[dict[str, Any]]
    stderr: str
    seconds: float


class Run:
    """`python -m worker run` in its own process."""

    def __init__(self, env: dict[str, str]) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOUT_")}
        defaults = {
            "SIGNOUT_KAFKA__TOPIC": TOPIC,
            "SIGNOUT_KAFKA__DLQ_TOPIC": DLQ,
            "SIGNOUT_HTTP__HOST": "127.0.0.1",
            "SIGNOUT_HTTP__PORT": "0",
        }
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env={**base, **defaults, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, within: float = 90) -> Exit:
        try:
            _, stderr = self.proc.communicate(timeout=within)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        seconds = time.monotonic() - self.started
        lines = stderr.strip().splitlines()
        logs = [json.loads(line) for line in lines if line.startswith("{")]
        return Exit(self.proc.returncode, lines[-1] if lines else "", logs, stderr, seconds)


def _assert_one_line_failure(ran: Exit, code: int, line: str) -> None:
    print(f"exit {ran.code} after {ran.seconds:.1f}s: {ran.line}")  # for the notes
    assert ran.code == code
    assert ran.line == f"signout-worker: {line}"
    assert "Traceback" not in ran.stderr
    plain = [line for line in ran.stderr.strip().splitlines() if not line.startswith("{")]
    assert plain == [ran.line]  # everything else is a structured log line


def test_a_missing_topic_stops_start_up_and_is_not_created(secured: Secured) -> None:
    absent = f"absent-{uuid.uuid4().hex[:8]}"
    ran = Run(
        {"SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": secured.plaintext, "SIGNOUT_KAFKA__TOPIC": absent}
    ).finish()
    _assert_one_line_failure(
        ran, 1, f'kafka: topic "{absent}" does not exist (SIGNOUT_KAFKA__TOPIC)'
    )
    # This broker auto-creates topics on request: the check must not have asked for that.
    assert absent not in asyncio.run(_existing_topics(secured.plaintext))


def test_an_invalid_topic_name_is_a_settings_error(secured: Secured) -> None:
    ran = Run(
        {"SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": secured.plaintext, "SIGNOUT_KAFKA__TOPIC": "a/b"}
    ).finish()
    assert ran.code == 2
    assert ran.stderr.strip().splitlines() == [ran.line]
    assert ran.line.startswith("signout-worker: invalid setting SIGNOUT_KAFKA__TOPIC: ")


def test_an_unreachable_bootstrap_fails_after_the_start_up_timeout_with_one_log_line() -> None:
    port = free_port()  # nothing listens there any more
    ran = Run(
        {
            "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "SIGNOUT_STARTUP_TIMEOUT_SECONDS": "3",
        }
    ).finish()
    _assert_one_line_failure(
        ran,
        1,
        f"kafka: no broker reachable at 127.0.0.1:{port} within 3s "
        f"(127.0.0.1:{port}: connection refused)",
    )
    waiting = [log for log in ran.logs if log["msg"] == "kafka not reachable yet; retrying"]
    assert len(waiting) == 1  # about three attempts, one state


def test_a_wrong_sasl_password_is_refused_without_printing_it(secured: Secured) -> None:
    wrong = "not-" + secured.password
    ran = Run(
        {
            "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": secured.sasl,
            "SIGNOUT_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SIGNOUT_KAFKA__SASL_MECHANISM": "PLAIN",
            "SIGNOUT_KAFKA__SASL_USERNAME": secured.user,
            "SIGNOUT_KAFKA__SASL_PASSWORD": wrong,
        }
    ).finish()
    _assert_one_line_failure(
        ran, 1, f'kafka: authentication failed (SASL PLAIN as "{secured.user}")'
    )
    assert wrong not in ran.stderr


def test_a_wrong_ca_fails_the_tls_handshake(secured: Secured) -> None:
    ran = Run(
        {
            "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": secured.ssl,
            "SIGNOUT_KAFKA__SECURITY_PROTOCOL": "SSL",
            "SIGNOUT_KAFKA__SSL_CAFILE": certifi.where(),  # public CAs, not the broker's
        }
    ).finish()
    _assert_one_line_failure(
        ran,
        1,
        f"kafka: TLS handshake with {secured.ssl} failed: certificate verify failed: "
        "self-signed certificate (SIGNOUT_KAFKA__SSL_CAFILE)",
    )


def test_plaintext_against_a_tls_port_says_the_protocol_may_be_wrong(secured: Secured) -> None:
    ran = Run({"SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": secured.ssl}).finish()
    _assert_one_line_failure(
        ran,
        1,
        f"kafka: {secured.ssl} closed the connection during the handshake: not a PLAINTEXT "
        "listener? (SIGNOUT_KAFKA__SECURITY_PROTOCOL)",
    )


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("target", ["black hole", "closed port"])
def test_sigterm_during_start_up_exits_cleanly_at_once(black_hole: str, target: str) -> None:
    bootstrap = black_hole if target == "black hole" else f"127.0.0.1:{free_port()}"
    run = Run(
        {"SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "SIGNOUT_STARTUP_TIMEOUT_SECONDS": "120"}
    )
    _wait_for_log(run, "serving /metrics /healthz /readyz")
    time.sleep(1.0)  # well into the cluster check
    signalled = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    ran = run.finish(within=60)
    print(f"{target}: exit {ran.code} {time.monotonic() - signalled:.2f}s after SIGTERM")
    assert ran.code == 0
    assert time.monotonic() - signalled < 30  # far below the 120 s start-up timeout
    assert "Traceback" not in ran.stderr
    assert [log["msg"] for log in ran.logs][-1] == "stopped"


def _wait_for_log(run: Run, message: str, within: float = 60) -> None:
    assert run.proc.stderr is not None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = run.proc.stderr.readline()
        if message in line:
            return
        if not line and run.proc.poll() is not None:
            break
    raise AssertionError(f"never logged {message!r}")


@pytest.mark.parametrize("listener", ["sasl", "ssl"])
async def test_the_check_passes_with_the_right_credentials(secured: Secured, listener: str) -> None:
    options: dict[str, Any] = {"topic": TOPIC, "dlq_topic": DLQ}
    if listener == "sasl":
        options |= {
            "bootstrap_servers": secured.sasl,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_username": secured.user,
            "sasl_password": secured.password,
        }
    else:
        options |= {
            "bootstrap_servers": secured.ssl,
            "security_protocol": "SSL",
            "ssl_cafile": secured.ca_file,
        }
    kafka = KafkaSettings.model_validate(options)
    await check_cluster(kafka, kafka.topics(), Deadline(30))
