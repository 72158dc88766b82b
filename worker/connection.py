"""aiokafka connection options shared by the consumer and the producer (security, SASL, TLS).

SASL OAUTHBEARER is Amazon MSK's IAM authentication: each token is a URL signed with the pod's
AWS credentials (IRSA), made by aws-msk-iam-sasl-signer in a thread (credential look-ups block).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

from worker.settings import KafkaSettings


class MskIamTokens(AbstractTokenProvider):  # type: ignore[misc]
    def __init__(self, region: str) -> None:
        self._region = region

    async def token(self) -> str:
        token, _expiry_ms = await asyncio.to_thread(
            MSKAuthTokenProvider.generate_auth_token, self._region
        )
        return str(token)


def producer_options() -> dict[str, Any]:
    """Every producer of the worker (dead letters, results, publish, replay): each write is
    acknowledged by all in-sync replicas, once (idempotent), batched for at most 5 ms."""
    return {"acks": "all", "enable_idempotence": True, "linger_ms": 5}


def producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_options(kafka), **producer_options())


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=kafka.ssl_cafile)
    if kafka.security_protocol.startswith("SASL"):
        options.update(_sasl(kafka))
    return options


def _sasl(kafka: KafkaSettings) -> dict[str, Any]:
    mechanism = kafka.sasl_mechanism or "PLAIN"
    if mechanism == "OAUTHBEARER":
        region = kafka.msk_iam_region or os.environ.get("AWS_REGION") or "us-east-1"
        return {"sasl_mechanism": mechanism, "sasl_oauth_token_provider": MskIamTokens(region)}
    options: dict[str, Any] = {"sasl_mechanism": mechanism}
    options["sasl_plain_username"] = kafka.sasl_username
    if kafka.sasl_password is not None:
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options
