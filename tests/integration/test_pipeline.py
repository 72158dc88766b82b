"""The sign-out pipeline end to end: a real broker, Cognito over HTTP (moto), the real worker."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from devstack.moto import MotoServer, Pool, client_kwargs
from tests.conftest import PoolFactory
from tests.contract import DLQ_HEADERS
from tests.integration.conftest import (
    Names,
    committed_and_ends,
    headers_of,
    publish,
    read_all,
    run_in_process,
    settings_for,
)
from worker.events import fingerprint
from worker.logs import configure

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def fake_jwt(exp: float) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': int(exp), 'sub': 'x'})}.sig"


@dataclass
class MixedBatch:
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> outcome/reason
    valid_tokens: list[str] = field(default_factory=list)
    all_tokens: list[str] = field(default_factory=list)

    def add(self, outcome: str, reason: str, value: bytes | dict[str, Any]) -> None:
        key = uuid.uuid4().hex
        if isinstance(value, dict):
            value = json.dumps({"event_id": key, **value}).encode()
        self.records.append((key.encode(), value))
        self.expected[key] = (outcome, reason)

    def expected_dead_letters(self) -> Counter[str]:
        return Counter(r for o, r in self.expected.values() if o == "dead_lettered")


async def revoke(pool: Pool, tokens: list[str]) -> None:
    async with get_session().create_client(
        "cognito-idp", **client_kwargs(pool.endpoint_url)
    ) as idp:
        for token in tokens:
            await idp.global_sign_out(AccessToken=token)


async def mixed_batch(pool: Pool) -> MixedBatch:
    batch = MixedBatch()
    users = pool.users
    valid, revoked, fallback, admins = users[:200], users[200:220], users[220:230], users[230:250]
    await revoke(pool, [u.access_token for u in revoked + fallback])
    for user in valid:
        batch.add("signed_out", "global_sign_out", {"access_token": user.access_token})
    batch.valid_tokens = [u.access_token for u in valid]
    for user in revoked:
        batch.add("dead_lettered", "not_authorized", {"access_token": user.access_token})
    for user in fallback:
        target = {"user_pool_id": pool.pool_id, "username": user.username}
        batch.add("signed_out", "admin_fallback", {"access_token": user.access_token, **target})
    for user in admins:
        batch.add(
            "signed_out",
            "admin_sign_out",
            {"user_pool_id": pool.pool_id, "username": user.username},
        )
    for i in range(10):
        batch.add(
            "dead_lettered",
            "user_not_found",
            {"user_pool_id": pool.pool_id, "username": f"ghost{i}"},
        )
    for i in range(5):
        batch.add(
            "dead_lettered",
            "resource_not_found",
            {"user_pool_id": "us-east-1_nopool", "username": f"u{i}"},
        )
    for _ in range(20):
        batch.add("dead_lettered", "token_expired", {"access_token": fake_jwt(time.time() - 600)})
    for i in range(20):
        batch.add(
            "dead_lettered", "token_invalid", {"access_token": f"opaque-token-{i}-" + "z" * 30}
        )
    for i in range(20):
        batch.add(
            "dead_lettered", "invalid_payload", f"not json {i} \x00".encode() if i % 2 else b"{}"
        )
    batch.all_tokens = [u.access_token for u in users[:230]]
    return batch


async def assert_every_valid_token_is_revoked(pool: Pool, tokens: list[str]) -> None:
    async with get_session().create_client(
        "cognito-idp", **client_kwargs(pool.endpoint_url)
    ) as idp:
        for token in tokens:
            with pytest.raises(ClientError) as refused:
                await idp.global_sign_out(AccessToken=token)
            assert refused.value.response["Error"]["Code"] == "NotAuthorizedException"


@pytest.mark.timeout(240)
async def test_a_mixed_batch_ends_each_record_in_its_expected_outcome(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    make_pool: PoolFactory,
    make_topic: Any,
    names: Names,
) -> None:
    pool = await make_pool(250)
    batch = await mixed_batch(pool)
    settings = settings_for(kafka_bootstrap, moto_server.endpoint_url, names)
    await publish(kafka_bootstrap, names.topic, batch.records, [("traceparent", TRACEPARENT)])

    metrics = await run_in_process(settings)

    dead = await read_all(kafka_bootstrap, names.dlq)
    by_key = {r.key.decode(): r for r in dead}
    assert len(by_key) == len(dead), "a record was dead-lettered twice"
    assert (
        Counter(headers_of(r)["signout.error.reason"] for r in dead)
        == batch.expected_dead_letters()
    )
    for record in dead:
        headers = headers_of(record)
        assert set(DLQ_HEADERS) <= headers.keys()
        assert headers["traceparent"] == TRACEPARENT.decode()
        assert (headers["signout.original.topic"], headers["signout.consumer.group"]) == (
            names.topic,
            names.group,
        )
        assert batch.expected[record.key.decode()] == (
            "dead_lettered",
            headers["signout.error.reason"],
        )
    results = [json.loads(r.value) for r in await read_all(kafka_bootstrap, names.results)]
    outcomes = Counter((r["outcome"], r["reason"]) for r in results)
    assert outcomes == Counter(batch.expected.values())
    committed, ends = await committed_and_ends(kafka_bootstrap, names.group, names.topic)
    assert committed == ends
    assert sum(ends.values()) == len(batch.records)
    await assert_every_valid_token_is_revoked(pool, batch.valid_tokens)
    assert (
        metrics.events.labels(
            outcome="signed_out", reason="global_sign_out", lane="bulk"
        )._value.get()
        == 200
    )


async def test_duplicates_finish_without_a_call_but_a_later_decision_signs_out_again(
    kafka_bootstrap: str, moto_server: MotoServer, make_pool: PoolFactory, names: Names
) -> None:
    pool = await make_pool(2)
    first = json.dumps({"event_id": "same", "access_token": pool.users[0].access_token}).encode()
    admin = {"user_pool_id": pool.pool_id, "username": pool.users[1].username}
    again = [json.dumps({"event_id": f"admin-{i}", **admin}).encode() for i in range(2)]
    await publish(kafka_bootstrap, names.topic, [(b"k", first)] * 3 + [(b"a", again[0])])
    await run_in_process(settings_for(kafka_bootstrap, moto_server.endpoint_url, names))
    # Published after the first admin sign-out completed: a new decision, signed out again.
    await publish(kafka_bootstrap, names.topic, [(b"a", v) for v in again[1:]])
    await run_in_process(settings_for(kafka_bootstrap, moto_server.endpoint_url, names))

    results = [json.loads(r.value) for r in await read_all(kafka_bootstrap, names.results)]
    assert Counter((r["event_id"], r["outcome"]) for r in results) == {
        ("same", "signed_out"): 1,
        ("same", "duplicate"): 2,
        ("admin-0", "signed_out"): 1,
        ("admin-1", "signed_out"): 1,
    }


@pytest.mark.timeout(240)
async def test_no_token_leaks_into_logs_dlq_or_results_at_debug(
    kafka_bootstrap: str, moto_server: MotoServer, make_pool: PoolFactory, names: Names
) -> None:
    pool = await make_pool(230 + 20)
    batch = await mixed_batch(pool)
    await publish(kafka_bootstrap, names.topic, batch.records)
    captured = io.StringIO()
    configure("DEBUG", "json", captured)
    try:
        await run_in_process(settings_for(kafka_bootstrap, moto_server.endpoint_url, names))
    finally:
        logging.getLogger().handlers.clear()
    dead = await read_all(kafka_bootstrap, names.dlq)
    results = await read_all(kafka_bootstrap, names.results)
    surfaces = [captured.getvalue()]
    for record in dead + results:
        surfaces.append((record.value or b"").decode("utf-8", "replace"))
        surfaces += [f"{k}={v.decode('utf-8', 'replace')}" for k, v in record.headers]
    assert len(captured.getvalue()) > 10_000, "the DEBUG log was not captured"
    secrets = batch.all_tokens + [t for t in _tokens_in(batch) if t not in batch.all_tokens]
    assert _leaks(secrets, "\n".join(surfaces)) == []
    redacted = [r for r in dead if b"redacted:sha256:" in (r.value or b"")]
    assert redacted, "token dead letters carry their fingerprint"
    fingerprints = {fingerprint(t)[7:] for t in secrets}
    assert all(json.loads(r.value)["access_token"].split(":")[-1] in fingerprints for r in redacted)


def _tokens_in(batch: MixedBatch) -> list[str]:
    tokens = []
    for _, value in batch.records:
        try:
            token = json.loads(value).get("access_token")
        except (ValueError, AttributeError):
            continue
        if isinstance(token, str):
            tokens.append(token)
    return tokens


def _leaks(tokens: list[str], text: str, width: int = 20) -> list[str]:
    """Fingerprints of tokens any 20-character piece of which appears in `text`."""
    windows: dict[str, str] = {}
    for token in tokens:
        for i in range(len(token) - width + 1):
            windows.setdefault(token[i : i + width], token)
    found = {
        windows[text[i : i + width]]
        for i in range(len(text) - width + 1)
        if text[i : i + width] in windows
    }
    return sorted(fingerprint(t) for t in found)
