"""Configuration from the environment (contracts.md §5): prefix `SIGNOUT_`, sections nested by `__`.

A bad value stops start-up with one line naming the variable (`SettingsError`), exit code 2.
Every number has a finite, sane range: an infinite rate or timeout would silently switch a
safeguard off. What only the cluster can tell (topics exist, credentials work) is checked by
`worker.startup` once connected.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from worker import regions

ENV_PREFIX = "SIGNOUT_"
NESTING = "__"
HOUR = 3600.0

# Kafka's own rule for topic names; "." and ".." are reserved.
_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
# host:port with a DNS name, an IPv4 address or a bracketed IPv6 address.
_BROKER = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(\d{1,5})")
# us-east-1, eu-central-1, ap-southeast-2, and partitions such as us-gov-west-1 or cn-north-1.
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _topic_name(value: str) -> str:
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            "not a valid Kafka topic name (1-249 characters of a-z A-Z 0-9 . _ -, not . or ..)"
        )
    return value


def _bootstrap_list(value: str) -> str:
    for entry in value.split(","):
        match = _BROKER.fullmatch(entry.strip())
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            raise ValueError(
                f"{entry.strip()!r} is not host:port (comma-separated, no scheme, port 1-65535)"
            )
    return value


def _region(value: str) -> str:
    if not _REGION.fullmatch(value):
        raise ValueError("not an AWS Region name such as us-east-1")
    return value


def _endpoint_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    shaped = parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok
    if not shaped or parts.username is not None or parts.query or parts.fragment or " " in value:
        raise ValueError("not an http(s)://host[:port][/path] URL (no credentials, no query)")
    return value


def _readable_file(value: str) -> str:
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise ValueError("no readable file at that path")
    return value


TopicName = Annotated[str, AfterValidator(_topic_name)]
Region = Annotated[str, AfterValidator(_region)]


class KafkaSettings(BaseModel):
    bootstrap_servers: Annotated[str, AfterValidator(_bootstrap_list)] = "localhost:9092"
    topic: TopicName = "signout.requests"
    # Optional urgent lane: same schema, consumed in the same group, overtakes the bulk topic.
    urgent_topic: TopicName | None = None
    group_id: str = Field("signout-worker", min_length=1)
    dlq_topic: TopicName = "signout.requests.dlq"
    results_topic: TopicName | None = None
    client_id: str = "signout-worker"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = Field(None, validate_default=True)
    sasl_password: SecretStr | None = Field(None, validate_default=True)
    ssl_cafile: Annotated[str, AfterValidator(_readable_file)] | None = None
    # OAUTHBEARER means Amazon MSK with IAM: tokens are signed with the pod's AWS credentials.
    msk_iam_region: Region | None = None
    # Brokers accept 6 s to 5 min by default (group.min/max.session.timeout.ms).
    session_timeout_ms: int = Field(45_000, ge=6_000, le=300_000)
    max_poll_interval_ms: int = Field(300_000, ge=10_000, le=3_600_000)

    @field_validator("dlq_topic", "results_topic", "urgent_topic")
    @classmethod
    def _not_the_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value == info.data.get("topic"):
            raise ValueError("must differ from SIGNOUT_KAFKA__TOPIC")
        if value is not None and info.field_name != "urgent_topic":
            if value == info.data.get("urgent_topic"):
                raise ValueError("must differ from SIGNOUT_KAFKA__URGENT_TOPIC")
        return value

    @field_validator("sasl_username", "sasl_password")
    @classmethod
    def _needed_by_sasl(
        cls, value: str | SecretStr | None, info: ValidationInfo
    ) -> str | SecretStr | None:
        protocol = info.data.get("security_protocol", "")
        mechanism = info.data.get("sasl_mechanism") or "PLAIN"
        needed = protocol.startswith("SASL") and mechanism in _PASSWORD_MECHANISMS
        empty = value is None or not (
            value.get_secret_value() if isinstance(value, SecretStr) else value
        )
        if needed and empty:
            raise ValueError(f"required by {protocol} with {mechanism}")
        return value

    @field_validator("max_poll_interval_ms")
    @classmethod
    def _not_below_session(cls, value: int, info: ValidationInfo) -> int:
        session = info.data.get("session_timeout_ms")
        if session is not None and value < session:
            raise ValueError("must not be below SIGNOUT_KAFKA__SESSION_TIMEOUT_MS")
        return value

    def topics(self) -> dict[str, str]:
        """Every topic the worker reads or writes, by the variable that names it."""
        named = {"SIGNOUT_KAFKA__TOPIC": self.topic, "SIGNOUT_KAFKA__DLQ_TOPIC": self.dlq_topic}
        if self.results_topic is not None:
            named["SIGNOUT_KAFKA__RESULTS_TOPIC"] = self.results_topic
        if self.urgent_topic is not None:
            named["SIGNOUT_KAFKA__URGENT_TOPIC"] = self.urgent_topic
        return named

    def source_topics(self) -> list[str]:
        """The topics consumed: the requests topic and, when set, the urgent one."""
        return [self.topic] + ([self.urgent_topic] if self.urgent_topic else [])


# An IAM role in any partition: arn:aws:iam::123456789012:role/path/name
_ROLE_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}")


class CognitoSettings(BaseModel):
    # Tokens without an `iss` claim, and every call when no Region can be told, go here.
    region: Region = "us-east-1"
    # One URL for every Region, a URL with a `{region}` placeholder, or a JSON map Region -> URL
    # (Regions not in the map use AWS's own endpoint). Unset: AWS's own endpoint per Region.
    endpoint_url: Annotated[str | dict[str, str] | None, NoDecode] = None
    admin_enabled: bool = True
    timeout_seconds: float = Field(5.0, gt=0, le=300, allow_inf_nan=False)
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
            for url in value.values():
                _endpoint_url(url)
        elif value is not None:
            _endpoint_url(value.replace("{region}", "us-east-1"))
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
    per_second: float = Field(20.0, gt=0, le=10_000, allow_inf_nan=False)
    # Calls that may go out back to back after an idle spell; large values defeat the budget.
    burst: float = Field(1.0, ge=1, le=100, allow_inf_nan=False)
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
        if not all(0 < budget <= 10_000 for budget in value.values()):
            raise ValueError("every budget must be above 0 and at most 10000")
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
    max_attempts: int = Field(10, ge=1, le=1_000)
    base_delay_seconds: float = Field(0.2, gt=0, le=HOUR, allow_inf_nan=False)
    max_delay_seconds: float = Field(10.0, gt=0, le=HOUR, allow_inf_nan=False)


class DedupSettings(BaseModel):
    # A request decided before a sign-out of the same target completed is covered by it.
    window_seconds: float = Field(300.0, ge=0, le=24 * HOUR, allow_inf_nan=False)
    max_entries: int = Field(100_000, ge=1, le=10_000_000)


class DlqSettings(BaseModel):
    # Replace a dead letter's access token by its fingerprint (retries_exhausted keeps it).
    redact_tokens: bool = True


class HttpSettings(BaseModel):
    host: str = "0.0.0.0"  # noqa: S104 - the metrics/probe port must be reachable in a pod
    port: int = Field(8080, ge=0, le=65535)
    # /healthz fails when the loop has not polled, or has had a backlog without progress, this long.
    poll_stall_seconds: float = Field(60.0, gt=0, le=HOUR, allow_inf_nan=False)
    progress_stall_seconds: float = Field(120.0, gt=0, le=HOUR, allow_inf_nan=False)


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
    shutdown_timeout_seconds: float = Field(25.0, gt=0, le=HOUR, allow_inf_nan=False)
    # Commits follow a finished record within this gap: a kill -9 redoes at most about this much.
    commit_interval_seconds: float = Field(0.1, gt=0, le=60, allow_inf_nan=False)
    # Connecting, authenticating and finding the topics; past it the worker exits 1.
    startup_timeout_seconds: float = Field(30.0, gt=0, le=600, allow_inf_nan=False)


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
    message = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    return f"invalid setting {variable}: {message}"
