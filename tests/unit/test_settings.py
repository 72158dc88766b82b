"""settings.py: defaults of contracts.md §5 and one clear line naming a bad variable."""

from __future__ import annotations

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
}

OVERRIDES = {  # variable: (as set in the environment, as read)
    "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": ("k1:9092,k2:9092", "k1:9092,k2:9092"),
    "SIGNOUT_KAFKA__RESULTS_TOPIC": ("signout.results", "signout.results"),
    "SIGNOUT_KAFKA__SECURITY_PROTOCOL": ("SASL_SSL", "SASL_SSL"),
    "SIGNOUT_KAFKA__SASL_MECHANISM": ("SCRAM-SHA-512", "SCRAM-SHA-512"),
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
    settings = load_settings()
    assert {v: value_of(settings, v) for v in OVERRIDES} == {
        v: r for v, (_, r) in OVERRIDES.items()
    }
    assert settings.http.port == 9090


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
