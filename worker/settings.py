"""Configuration from the environment (contracts.md §5): prefix `SIGNOUT_`, sections nested by `__`.

A bad value stops start-up with one line naming the variable (`SettingsError`), exit code 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from worker import regions

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


# An IAM role in any partition: arn:aws:iam::123456789012:role/path/name
_ROLE_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}")


class CognitoSettings(BaseModel):
    # Tokens without an `iss` claim, and every call when no Region can be told, go here.
    region: str = Field("us-east-1", min_length=1)
    # One URL for every Region, a URL with a `{region}` placeholder, or a JSON map Region -> URL
    # (Regions not in the map use AWS's own endpoint). Unset: AWS's own endpoint per Region.
    endpoint_url: Annotated[str | dict[str, str] | None, NoDecode] = None
    admin_enabled: bool = True
    timeout_seconds: float = Field(5.0, gt=0)
    # Allowed pool ids (JSON list or comma-separated); unset: any pool.
    user_pools: Annotated[frozenset[str] | None, NoDecode] = None
    # Pool id -> account name: one rate budget per (account, Region).
    accounts: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Account name or pool id -> IAM role ARN assumed for admin calls to that pool.
    admin_roles: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Pool id -> Region for admin calls to a pool replicated across Regions.
    pool_regions: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    @field_validator("endpoint_url", "accounts", "admin_roles", "pool_regions", mode="before")
    @classmethod
    def _json_map(cls, value: object) -> object:
        return _json_object(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoints_name_known_regions(
        cls, value: str | dict[str, str] | None
    ) -> str | dict[str, str] | None:
        if isinstance(value, dict):
            _known_regions(value)
            if not all(value.values()):
                raise ValueError("every Region needs a URL")
        return value

    @field_validator("user_pools", mode="before")
    @classmethod
    def _pool_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("user_pools")
    @classmethod
    def _pools_are_pool_ids(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is not None:
            _pool_ids(value)
        return value

    @field_validator("accounts")
    @classmethod
    def _accounts_by_pool(cls, value: dict[str, str]) -> dict[str, str]:
        _pool_ids(value)
        if not all(value.values()):
            raise ValueError("account names must not be empty")
        return value

    @field_validator("admin_roles")
    @classmethod
    def _roles_are_arns(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k, arn in value.items() if not _ROLE_ARN.fullmatch(arn))
        if bad:
            raise ValueError(f"not an IAM role ARN for {', '.join(bad)}")
        return value

    @field_validator("pool_regions")
    @classmethod
    def _pool_regions_known(cls, value: dict[str, str]) -> dict[str, str]:
        _pool_ids(value)
        _known_regions(value.values())
        return value


class RateSettings(BaseModel):
    # For ALL replicas together; Cognito's UserUpdate quota is 25 RPS per account and Region.
    per_second: float = Field(20.0, gt=0)
    burst: float = Field(1.0, ge=1)
    # Region -> budget, overriding `per_second` for every account in that Region.
    regions: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)

    @field_validator("regions", mode="before")
    @classmethod
    def _json_map(cls, value: object) -> object:
        return _json_object(value)

    @field_validator("regions")
    @classmethod
    def _regions_known(cls, value: dict[str, float]) -> dict[str, float]:
        _known_regions(value)
        if not all(budget > 0 for budget in value.values()):
            raise ValueError("every budget must be greater than 0")
        return value


def _json_object(value: object) -> object:
    # Read here rather than by the settings source, so that an error names the variable.
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return json.loads(value)
    return value


def _known_regions(names: Iterable[str]) -> None:
    unknown = sorted(r for r in names if not regions.is_known(r))
    if unknown:
        raise ValueError(f"unknown Region {', '.join(unknown)}")


def _pool_ids(names: Iterable[str]) -> None:
    bad = sorted(p for p in names if not regions.is_known(regions.pool_region(p) or ""))
    if bad:
        raise ValueError(f"not a pool id of a known Region: {', '.join(bad)}")


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
