"""settings.py: defaults of contracts.md §5 and one clear line naming a bad variable."""

from __future__ import annotations

import pytest

from worker.settings import Settings, SettingsError, load_settings


def test_defaults_match_the_contract() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "localhost:9092"
    assert settings.kafka.topic == "signout.requests"
    assert settings.kafka.group_id == "signout-worker"
    assert settings.kafka.dlq_topic == "signout.requests.dlq"
    assert settings.kafka.results_topic is None
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.kafka.sasl_mechanism is None
    assert settings.cognito.region == "us-east-1"
    assert settings.cognito.endpoint_url is None
    assert settings.cognito.admin_enabled is True
    assert settings.cognito.timeout_seconds == 5
    assert settings.rate.per_second == 20
    assert settings.max_in_flight == 64
    assert settings.retry.max_attempts == 10
    assert settings.http.port == 8080
    assert settings.shutdown_timeout_seconds == 25
    assert settings.log.level == "INFO"
    assert settings.log.format == "json"
    assert settings.dlq.redact_tokens is True


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOUT_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("SIGNOUT_KAFKA__RESULTS_TOPIC", "signout.results")
    monkeypatch.setenv("SIGNOUT_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SIGNOUT_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SIGNOUT_COGNITO__ADMIN_ENABLED", "false")
    monkeypatch.setenv("SIGNOUT_COGNITO__ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("SIGNOUT_RATE__PER_SECOND", "7.5")
    monkeypatch.setenv("SIGNOUT_MAX_IN_FLIGHT", "8")
    monkeypatch.setenv("SIGNOUT_RETRY__MAX_ATTEMPTS", "3")
    monkeypatch.setenv("SIGNOUT_DLQ__REDACT_TOKENS", "false")
    monkeypatch.setenv("SIGNOUT_LOG__FORMAT", "console")
    monkeypatch.setenv("signout_http__port", "9090")  # names are case-insensitive
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.kafka.results_topic == "signout.results"
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.cognito.admin_enabled is False
    assert settings.cognito.endpoint_url == "http://127.0.0.1:5000"
    assert settings.rate.per_second == 7.5
    assert settings.max_in_flight == 8
    assert settings.retry.max_attempts == 3
    assert settings.dlq.redact_tokens is False
    assert settings.log.format == "console"
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
