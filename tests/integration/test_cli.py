"""The command line as users run it (`signout-worker`, `python -m worker`) in its own process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.conftest import Names, read_all
from worker.events import json_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema" / "signout-request.v1.json"


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_schema_command_prints_the_schema_kept_in_the_repo() -> None:
    printed = cli("schema")
    assert printed.returncode == 0
    assert json.loads(printed.stdout) == json.loads(SCHEMA_FILE.read_text()) == json_schema()


def test_the_kept_schema_requires_event_id_and_names_both_targets() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["required"] == ["event_id"]
    assert {"access_token", "user_pool_id", "username", "requested_at"} <= schema[
        "properties"
    ].keys()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIGNOUT_RATE__PER_SECOND", "0"),
        ("SIGNOUT_MAX_IN_FLIGHT", "many"),
        ("SIGNOUT_KAFKA__SECURITY_PROTOCOL", "SMOKE_SIGNALS"),
        ("SIGNOUT_LOG__FORMAT", "xml"),
        ("SIGNOUT_COGNITO__ADMIN_ENABLED", "perhaps"),
        ("SIGNOUT_RATE__PER_SECOND", "inf"),
        ("SIGNOUT_RATE__BURST", "1e9"),
        ("SIGNOUT_DEDUP__WINDOW_SECONDS", "nan"),
        ("SIGNOUT_KAFKA__DLQ_TOPIC", "dead letters"),
        ("SIGNOUT_KAFKA__RESULTS_TOPIC", ".."),
        ("SIGNOUT_KAFKA__BOOTSTRAP_SERVERS", "kafka://k1:9092"),
        ("SIGNOUT_KAFKA__SSL_CAFILE", "/nonexistent/ca.pem"),
        ("SIGNOUT_KAFKA__SASL_USERNAME", ""),
        ("SIGNOUT_COGNITO__ENDPOINT_URL", "http://user:pw@cognito.local"),
        ("SIGNOUT_COGNITO__REGION", "moon-1"),
        ("SIGNOUT_KAFKA__SESSION_TIMEOUT_MS", "3600000"),
        ("SIGNOUT_STARTUP_TIMEOUT_SECONDS", "inf"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(variable: str, value: str) -> None:
    sasl = {"SIGNOUT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"} if "SASL" in variable else {}
    ran = cli("run", env={**sasl, variable: value})
    assert ran.returncode == 2
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"signout-worker: invalid setting {variable}: ")
    assert "Traceback" not in ran.stderr


def test_publish_rejects_an_invalid_request_without_sending() -> None:
    ran = cli(
        "publish",
        "--stdin",
        stdin='{"event_id": "x"}\n',
        env={"SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"},
    )
    assert ran.returncode != 0
    assert "line 1: not a valid request" in ran.stderr


def test_publish_urgent_without_an_urgent_topic_is_one_line_and_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOUT_")}
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "publish",
            "--urgent",
            "--user-pool-id",
            "p",
            "--username",
            "u",
        ],
        env={**env, "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 2
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("signout-worker: ")
    assert "SIGNOUT_KAFKA__URGENT_TOPIC" in lines[0]
    assert ran.stdout == ""  # nothing was published


async def _create(bootstrap: str, *topics: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1) for name in topics])
    finally:
        await admin.close()


async def test_publish_urgent_sends_to_the_urgent_topic_and_plain_publish_to_the_requests_topic(
    kafka_bootstrap: str, names: Names
) -> None:
    urgent_topic = names.topic + ".urgent"
    await _create(kafka_bootstrap, urgent_topic)
    env = {
        "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SIGNOUT_KAFKA__TOPIC": names.topic,
        "SIGNOUT_KAFKA__URGENT_TOPIC": urgent_topic,
    }
    urgent = '{"event_id": "u-1", "user_pool_id": "us-east-1_x", "username": "mallory"}\n'
    ran = await asyncio.to_thread(cli, "publish", "--urgent", "--stdin", env=env, stdin=urgent)
    assert (ran.returncode, ran.stdout.strip()) == (0, "u-1"), ran.stderr
    flags = ("--event-id", "b-1", "--user-pool-id", "us-east-1_x", "--username", "bob")
    ran = await asyncio.to_thread(cli, "publish", *flags, env=env)
    assert (ran.returncode, ran.stdout.strip()) == (0, "b-1"), ran.stderr

    on_urgent = await read_all(kafka_bootstrap, urgent_topic)
    on_requests = await read_all(kafka_bootstrap, names.topic)
    assert [(r.key, json.loads(r.value)["event_id"]) for r in on_urgent] == [(b"mallory", "u-1")]
    assert [(r.key, json.loads(r.value)["event_id"]) for r in on_requests] == [(b"bob", "b-1")]


def test_version_is_printed_by_both_entry_points() -> None:
    assert cli("--version").stdout.strip()
    script = Path(sys.executable).with_name("signout-worker")
    ran = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stdout.strip() == cli("--version").stdout.strip()
