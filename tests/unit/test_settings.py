"""settings.py: defaults of contracts.md §5 and one clear line naming a bad variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker.settings import Settings, SettingsError, load_settings


def value_of(settings: Settings, variable: str) -> Any:
    """The value a SIGNOUT_* variable sets, e.g. SIGNOUT_KAFKA__TOPIC -> settings.kafka.topic."""
    value: Any = settings
    for part in variable.removeprefix("SIGNOUT_").lower().split("__"):
        value = getattr(value, part)
    return value


CONTRACT_DEFAULTS = {  # contracts.md §5
    "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": "localhost:9092",
    "SIGNOUT_KAFKA__TOPIC": "signout.requests",
    "SIGNOUT_KAFKA__GROUP_ID": "signout-worker",
    "SIGNOUT_KAFKA__DLQ_TOPIC": "signout.requests.dlq",
    "SIGNOUT_KAFKA__RESULTS_TOPIC": None,
    "SIGNOUT_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
    "SIGNOUT_KAFKA__SASL_MECHANISM": None,
    "SIGNOUT_COGNITO__REGION": "us-east-1",
    "SIGNOUT_COGNITO__ENDPOINT_URL": None,
    "SIGNOUT_COGNITO__ADMIN_ENABLED": True,
    "SIGNOUT_COGNITO__TIMEOUT_SECONDS": 5,
    "SIGNOUT_RATE__PER_SECOND": 20,
    "SIGNOUT_MAX_IN_FLIGHT": 64,
    "SIGNOUT_RETRY__MAX_ATTEMPTS": 10,
    "SIGNOUT_HTTP__PORT": 8080,
    "SIGNOUT_SHUTDOWN_TIMEOUT_SECONDS": 25,
    "SIGNOUT_LOG__LEVEL": "INFO",
    "SIGNOUT_LOG__FORMAT": "json",
    "SIGNOUT_DLQ__REDACT_TOKENS": True,
    "SIGNOUT_STARTUP_TIMEOUT_SECONDS": 30,
}

OVERRIDES = {  # variable: (as set in the environment, as read)
    "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": ("k1:9092,k2:9092", "k1:9092,k2:9092"),
    "SIGNOUT_KAFKA__RESULTS_TOPIC": ("signout.results", "signout.results"),
    "SIGNOUT_KAFKA__SECURITY_PROTOCOL": ("SASL_SSL", "SASL_SSL"),
    "SIGNOUT_KAFKA__SASL_MECHANISM": ("SCRAM-SHA-512", "SCRAM-SHA-512"),
    "SIGNOUT_KAFKA__SASL_USERNAME": ("alice", "alice"),
    "SIGNOUT_COGNITO__REGION": ("us-gov-west-1", "us-gov-west-1"),
    "SIGNOUT_STARTUP_TIMEOUT_SECONDS": ("90", 90),
    "SIGNOUT_COGNITO__ADMIN_ENABLED": ("false", False),
    "SIGNOUT_COGNITO__ENDPOINT_URL": ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    "SIGNOUT_RATE__PER_SECOND": ("7.5", 7.5),
    "SIGNOUT_MAX_IN_FLIGHT": ("8", 8),
    "SIGNOUT_RETRY__MAX_ATTEMPTS": ("3", 3),
    "SIGNOUT_DLQ__REDACT_TOKENS": ("false", False),
    "SIGNOUT_LOG__FORMAT": ("console", "console"),
}


def test_defaults_match_the_contract() -> None:
    settings = load_settings()
    assert {v: value_of(settings, v) for v in CONTRACT_DEFAULTS} == CONTRACT_DEFAULTS


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, (raw, _) in OVERRIDES.items():
        monkeypatch.setenv(variable, raw)
    monkeypatch.setenv("signout_http__port", "9090")  # names are case-insensitive
    monkeypatch.setenv("SIGNOUT_KAFKA__SASL_PASSWORD", "s3cret")
    settings = load_settings()
    assert {v: value_of(settings, v) for v in OVERRIDES} == {
        v: r for v, (_, r) in OVERRIDES.items()
    }
    assert settings.http.port == 9090


PASSWORD = "correct-horse-battery"
SASL = {
    "SIGNOUT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    "SIGNOUT_KAFKA__SASL_USERNAME": "alice",
    "SIGNOUT_KAFKA__SASL_PASSWORD": PASSWORD,
}
# Each case: the variable named in the error, the environment that is wrong about it.
REJECTED: list[tuple[str, dict[str, str]]] = [
    *[
        (variable, {variable: value})
        for variable in (
            "SIGNOUT_RATE__PER_SECOND",
            "SIGNOUT_RATE__BURST",
            "SIGNOUT_COGNITO__TIMEOUT_SECONDS",
            "SIGNOUT_RETRY__BASE_DELAY_SECONDS",
            "SIGNOUT_RETRY__MAX_DELAY_SECONDS",
            "SIGNOUT_DEDUP__WINDOW_SECONDS",
            "SIGNOUT_HTTP__POLL_STALL_SECONDS",
            "SIGNOUT_HTTP__PROGRESS_STALL_SECONDS",
            "SIGNOUT_SHUTDOWN_TIMEOUT_SECONDS",
            "SIGNOUT_COMMIT_INTERVAL_SECONDS",
            "SIGNOUT_STARTUP_TIMEOUT_SECONDS",
        )
        for value in ("inf", "-inf", "nan", "Infinity", "1e308")
    ],
    ("SIGNOUT_RATE__PER_SECOND", {"SIGNOUT_RATE__PER_SECOND": "10001"}),
    ("SIGNOUT_RATE__BURST", {"SIGNOUT_RATE__BURST": "101"}),
    ("SIGNOUT_RATE__BURST", {"SIGNOUT_RATE__BURST": "0.5"}),
    ("SIGNOUT_COGNITO__TIMEOUT_SECONDS", {"SIGNOUT_COGNITO__TIMEOUT_SECONDS": "301"}),
    ("SIGNOUT_SHUTDOWN_TIMEOUT_SECONDS", {"SIGNOUT_SHUTDOWN_TIMEOUT_SECONDS": "3601"}),
    ("SIGNOUT_STARTUP_TIMEOUT_SECONDS", {"SIGNOUT_STARTUP_TIMEOUT_SECONDS": "0"}),
    ("SIGNOUT_STARTUP_TIMEOUT_SECONDS", {"SIGNOUT_STARTUP_TIMEOUT_SECONDS": "601"}),
    ("SIGNOUT_DEDUP__WINDOW_SECONDS", {"SIGNOUT_DEDUP__WINDOW_SECONDS": "86401"}),
    ("SIGNOUT_DEDUP__MAX_ENTRIES", {"SIGNOUT_DEDUP__MAX_ENTRIES": "10000001"}),
    ("SIGNOUT_RETRY__MAX_ATTEMPTS", {"SIGNOUT_RETRY__MAX_ATTEMPTS": "1001"}),
    *[
        (f"SIGNOUT_KAFKA__{field}", {f"SIGNOUT_KAFKA__{field}": name})
        for field in ("TOPIC", "DLQ_TOPIC", "RESULTS_TOPIC")
        for name in ("", ".", "..", "sign out", "a/b", "t" * 250, "tópico", "a,b")
    ],
    ("SIGNOUT_KAFKA__DLQ_TOPIC", {"SIGNOUT_KAFKA__DLQ_TOPIC": "signout.requests"}),
    ("SIGNOUT_KAFKA__RESULTS_TOPIC", {"SIGNOUT_KAFKA__RESULTS_TOPIC": "signout.requests"}),
    (
        "SIGNOUT_KAFKA__DLQ_TOPIC",
        {"SIGNOUT_KAFKA__TOPIC": "requests", "SIGNOUT_KAFKA__DLQ_TOPIC": "requests"},
    ),
    *[
        (variable, {**SASL, "SIGNOUT_KAFKA__SASL_MECHANISM": mechanism, variable: ""})
        for variable in ("SIGNOUT_KAFKA__SASL_USERNAME", "SIGNOUT_KAFKA__SASL_PASSWORD")
        for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    ],
    (
        "SIGNOUT_KAFKA__SASL_USERNAME",
        {"SIGNOUT_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT"},  # PLAIN is the default mechanism
    ),
    (
        "SIGNOUT_KAFKA__SASL_PASSWORD",
        {"SIGNOUT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "SIGNOUT_KAFKA__SASL_USERNAME": "bob"},
    ),
    ("SIGNOUT_KAFKA__SSL_CAFILE", {"SIGNOUT_KAFKA__SSL_CAFILE": "/nonexistent/ca.pem"}),
    ("SIGNOUT_KAFKA__SSL_CAFILE", {"SIGNOUT_KAFKA__SSL_CAFILE": "/"}),
    *[
        ("SIGNOUT_KAFKA__BOOTSTRAP_SERVERS", {"SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": servers})
        for servers in (
            "",
            "k1:9092,",
            "k1:9092,,k2:9092",
            "k1",
            "k1:",
            "k1:0",
            "k1:65536",
            "k1:port",
            "PLAINTEXT://k1:9092",
            "k1:9092;k2:9092",
            "-k1:9092",
            "::1:9092",
        )
    ],
    *[
        ("SIGNOUT_COGNITO__ENDPOINT_URL", {"SIGNOUT_COGNITO__ENDPOINT_URL": url})
        for url in (
            "127.0.0.1:5000",
            "ftp://cognito.example",
            "http://",
            "http://user:pw@cognito.example",
            "http://cognito.example:99999",
            "http://cognito.example:port",
            "http://cognito.example/?a=b",
            "http://cognito example",
        )
    ],
    *[
        (variable, {variable: region})
        for variable in ("SIGNOUT_COGNITO__REGION", "SIGNOUT_KAFKA__MSK_IAM_REGION")
        for region in ("", "us-east", "US-EAST-1", "useast1", "us-east-1a", "us_east_1", "u-east-1")
    ],
    ("SIGNOUT_KAFKA__SESSION_TIMEOUT_MS", {"SIGNOUT_KAFKA__SESSION_TIMEOUT_MS": "5999"}),
    ("SIGNOUT_KAFKA__SESSION_TIMEOUT_MS", {"SIGNOUT_KAFKA__SESSION_TIMEOUT_MS": "300001"}),
    (
        "SIGNOUT_KAFKA__MAX_POLL_INTERVAL_MS",
        {
            "SIGNOUT_KAFKA__SESSION_TIMEOUT_MS": "60000",
            "SIGNOUT_KAFKA__MAX_POLL_INTERVAL_MS": "59999",
        },
    ),
]


@pytest.mark.parametrize(("variable", "environment"), REJECTED)
def test_a_rejected_value_is_one_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, environment: dict[str, str]
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"invalid setting {variable}: ")
    assert PASSWORD not in text


ACCEPTED: list[dict[str, str]] = [
    {"SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": "b-1.msk.example.com:9098,10.0.0.7:9092,[::1]:9093"},
    {"SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": "k1:9092, k2:9092"},
    {"SIGNOUT_KAFKA__TOPIC": "a" * 249, "SIGNOUT_KAFKA__RESULTS_TOPIC": "Sign_Out-results.v1"},
    {"SIGNOUT_COGNITO__ENDPOINT_URL": "https://cognito-idp.eu-west-1.amazonaws.com/"},
    {"SIGNOUT_COGNITO__ENDPOINT_URL": "http://[::1]:5000/emulator"},
    {"SIGNOUT_COGNITO__REGION": "cn-north-1"},
    {"SIGNOUT_COGNITO__REGION": "ap-southeast-2"},
    {
        "SIGNOUT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "SIGNOUT_KAFKA__SASL_MECHANISM": "OAUTHBEARER",
    },
    {**SASL, "SIGNOUT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512"},
    {"SIGNOUT_KAFKA__SESSION_TIMEOUT_MS": "6000", "SIGNOUT_KAFKA__MAX_POLL_INTERVAL_MS": "10000"},
    {"SIGNOUT_RATE__PER_SECOND": "10000", "SIGNOUT_RATE__BURST": "100"},
    {"SIGNOUT_STARTUP_TIMEOUT_SECONDS": "600", "SIGNOUT_DEDUP__WINDOW_SECONDS": "0"},
]


@pytest.mark.parametrize("environment", ACCEPTED)
def test_sane_values_at_the_edges_are_accepted(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert {v: str(value_of(settings, v)) for v in environment if "PASSWORD" not in v} == {
        v: str(float(x)) if isinstance(value_of(settings, v), float) else x
        for v, x in environment.items()
        if "PASSWORD" not in v
    }


def test_a_readable_ca_file_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SIGNOUT_KAFKA__SSL_CAFILE", str(ca))
    assert load_settings().kafka.ssl_cafile == str(ca)


def test_the_topics_to_check_are_named_by_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().kafka.topics() == {
        "SIGNOUT_KAFKA__TOPIC": "signout.requests",
        "SIGNOUT_KAFKA__DLQ_TOPIC": "signout.requests.dlq",
    }
    monkeypatch.setenv("SIGNOUT_KAFKA__RESULTS_TOPIC", "signout.results")
    assert load_settings().kafka.topics()["SIGNOUT_KAFKA__RESULTS_TOPIC"] == "signout.results"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIGNOUT_RATE__PER_SECOND", "fast"),
        ("SIGNOUT_RATE__PER_SECOND", "0"),
        ("SIGNOUT_MAX_IN_FLIGHT", "0"),
        ("SIGNOUT_RETRY__MAX_ATTEMPTS", "many"),
        ("SIGNOUT_COGNITO__ADMIN_ENABLED", "maybe"),
        ("SIGNOUT_COGNITO__TIMEOUT_SECONDS", "-1"),
        ("SIGNOUT_KAFKA__SECURITY_PROTOCOL", "TLS"),
        ("SIGNOUT_LOG__FORMAT", "xml"),
        ("SIGNOUT_LOG__LEVEL", "LOUD"),
        ("SIGNOUT_HTTP__PORT", "70000"),
        ("SIGNOUT_SHUTDOWN_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"invalid setting {variable}: ")
    assert len(text) > len(f"invalid setting {variable}: ")  # says what is wrong


def test_a_malformed_section_variable_is_also_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOUT_KAFKA", "not-json")
    with pytest.raises(SettingsError, match=r"^invalid setting SIGNOUT_KAFKA\b"):
        load_settings()


def test_settings_sections_can_be_overridden_in_code() -> None:
    settings = Settings()
    changed = settings.model_copy(update={"max_in_flight": 2})
    assert changed.max_in_flight == 2
    assert settings.max_in_flight == 64
