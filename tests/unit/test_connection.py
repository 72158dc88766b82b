"""Kafka connection options: plaintext, SASL/SCRAM with TLS, and MSK IAM (OAUTHBEARER)."""

from __future__ import annotations

import base64
import ssl
from urllib.parse import parse_qs, urlparse

import pytest
from pydantic import SecretStr

from worker.connection import MskIamTokens, client_options
from worker.settings import KafkaSettings


def test_plaintext_has_no_security_options() -> None:
    options = client_options(KafkaSettings(bootstrap_servers="a:9092,b:9092"))
    assert options["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert options["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in options
    assert "sasl_mechanism" not in options


def test_sasl_ssl_with_scram_passes_the_secret_and_a_tls_context() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="worker",
        sasl_password=SecretStr("s3cret"),
    )
    options = client_options(kafka)
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("worker", "s3cret")
    assert "s3cret" not in repr(kafka)


async def test_oauthbearer_signs_msk_iam_tokens_with_the_aws_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", msk_iam_region="eu-west-1"
    )
    options = client_options(kafka)
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokens)
    token = await provider.token()
    url = urlparse(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    query = parse_qs(url.query)
    assert url.netloc == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
