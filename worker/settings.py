"""Configuration from the environment (contracts.md §5): prefix `SIGNOUT_`, sections nested by `__`.

A bad value stops start-up with one line naming the variable (`SettingsError`), exit code 2.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "SIGNOUT_"
NESTING = "__"


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    topic: str = Field("signout.requests", min_length=1)
    group_id: str = Field("signout-worker", min_length=1)
    dlq_topic: str = Field("signout.requests.dlq", min_length=1)
    results_topic: str | None = None
    client_id: str = "signout-worker"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    # OAUTHBEARER means Amazon MSK with IAM: tokens are signed with the pod's AWS credentials.
    msk_iam_region: str | None = None
    session_timeout_ms: int = Field(45_000, ge=6_000)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)


class CognitoSettings(BaseModel):
    region: str = Field("us-east-1", min_length=1)
    endpoint_url: str | None = None
    admin_enabled: bool = True
    timeout_seconds: float = Field(5.0, gt=0)


class RateSettings(BaseModel):
    # For ALL replicas together; Cognito's UserUpdate quota is 25 RPS per account and Region.
    per_second: float = Field(20.0, gt=0)
    burst: float = Field(1.0, ge=1)


class RetrySettings(BaseModel):
    max_attempts: int = Field(10, ge=1)
    base_delay_seconds: float = Field(0.2, gt=0)
    max_delay_seconds: float = Field(10.0, gt=0)


class DedupSettings(BaseModel):
    # A request decided before a sign-out of the same target completed is covered by it.
    window_seconds: float = Field(300.0, ge=0)
    max_entries: int = Field(100_000, ge=1)


class DlqSettings(BaseModel):
    # Replace a dead letter's access token by its fingerprint (retries_exhausted keeps it).
    redact_tokens: bool = True


class HttpSettings(BaseModel):
    host: str = "0.0.0.0"  # noqa: S104 - the metrics/probe port must be reachable in a pod
    port: int = Field(8080, ge=0, le=65535)
    # /healthz fails when the loop has not polled, or has had a backlog without progress, this long.
    poll_stall_seconds: float = Field(60.0, gt=0)
    progress_stall_seconds: float = Field(120.0, gt=0)


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"
    # Client-library protocol logging (it shows SASL passwords and produced values): off by default.
    wire_debug: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTING,
        case_sensitive=False,
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    cognito: CognitoSettings = CognitoSettings()
    rate: RateSettings = RateSettings()
    retry: RetrySettings = RetrySettings()
    dedup: DedupSettings = DedupSettings()
    dlq: DlqSettings = DlqSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    max_in_flight: int = Field(64, ge=1, le=10_000)
    shutdown_timeout_seconds: float = Field(25.0, gt=0)
    commit_interval_seconds: float = Field(1.0, gt=0)


class SettingsError(Exception):
    """One line naming the first bad variable."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    except SourceError as exc:  # a section variable (SIGNOUT_KAFKA=...) that is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        raise SettingsError(
            f"invalid setting {ENV_PREFIX}{field.upper()}: not valid JSON"
        ) from None


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    path = [str(part) for part in first["loc"]]
    variable = ENV_PREFIX + NESTING.join(path).upper()
    return f"invalid setting {variable}: {first['msg']}"
