"""Hostile input through a real broker: whatever a publisher sends, every record ends in exactly one
outcome, the worker never stops, commits reach the end offsets, and valid requests are signed out.

Hand-made records cover each known class of bad input; hypothesis adds generated ones (drawn once,
derandomized, then published together), all mixed with valid requests over several partitions.
The worker runs once, in its own process, with `--until-idle`.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.moto import MotoServer
from tests.conftest import PoolFactory
from tests.integration.conftest import (
    WorkerProcess,
    committed_and_ends,
    env_for,
    read_all,
    settings_for,
)
from tests.integration.test_pipeline import assert_every_valid_token_is_revoked
from tests.integration.test_undecodable import (
    BAD_KEY,
    RawKey,
    send_one_batch,
    topics_with_partitions,
)

PARTITIONS = 4
SOURCE_LIMIT = 3_000_000  # the source topic takes values larger than the DLQ ever will
DLQ_LIMIT = 400_000  # smaller than a compressed value's dead letter, uncompressed
MB = 1_000_000

Headers = list[tuple[str, bytes]]


@dataclass
class Hostile:
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    raw_batch: bool = False  # needs the pure-Python builder (raw header key, null key and value)
    gzip: bool = False


def segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_with(payload: bytes, header: bytes = b'{"alg":"none"}') -> str:
    return f"{segment(header)}.{segment(payload)}.sig"


def carrying(token: str, key: bytes) -> bytes:
    return json.dumps({"event_id": key.decode(errors="replace"), "access_token": token}).encode()


def uid() -> bytes:
    return uuid.uuid4().hex.encode()


def hand_made() -> list[Hostile]:
    """One or more records of every class of hostile input known to break a consumer."""
    deep = 100_000
    cases: list[Hostile] = []

    def add(value: bytes | None, **kw: Any) -> None:
        key = kw.pop("key", None) or uid()
        cases.append(Hostile(key, value, **kw))

    add(b"[" * deep + b"]" * deep)  # nesting in the value
    add(b'{"a":' * deep + b"1" + b"}" * deep)
    for nested in (b"[" * deep + b"]" * deep, b'{"a":' * 5000 + b"1" + b"}" * 5000):
        k = uid()
        cases.append(Hostile(k, carrying(token_with(b'{"exp":' + nested + b"}"), k)))
        cases.append(Hostile(k + b"h", carrying(token_with(b'{"exp":1}', nested), k + b"h")))
    for exp in (b"1" + b"0" * 400, b"-" + b"9" * 5000, b"1e400", b"NaN", b"Infinity", b"-Infinity"):
        k = uid()
        cases.append(Hostile(k, carrying(token_with(b'{"exp":' + exp + b',"sub":"x"}'), k)))
    add(b'{"event_id":"\\ud800","access_token":"a.b.c"}')  # lone surrogates
    add(b'{"event_id":"x","access_token":"\\udfff\\ud800"}')
    k = uid()
    cases.append(Hostile(k, carrying(token_with(b'{"exp":1,"sub":"\\ud800"}'), k)))
    add(b'{"event_id":"big","access_token":"' + b"a" * 990_000 + b'"}')  # near the 1 MB limit
    add(b"x" * (2 * MB))  # above it: the dead letter cannot carry it
    add(b'{"access_token":"' + b"z" * 800_000 + b'"}', gzip=True)  # fits compressed only
    add(b"y" * (2 * MB + 500_000), gzip=True)
    add(b"v", headers=[(RawKey(BAD_KEY), b"h"), ("ok", b"1")], raw_batch=True)
    add(b"v", headers=[(RawKey(b"\xc3\x28"), b"h")], raw_batch=True)
    for value in (b"not json", b"\x00\xff\xfe", b"[]", b"1", b'"s"', b"null", b"true", b"{}"):
        add(value)
    forged = [
        ("SIGNOUT.error.reason", b"forged"),
        ("SignOut.Original.Offset", b"-1"),
        ("signout.attempts", b"999"),
    ]
    add(b"not json", headers=forged)
    add(b"")  # empty value
    add(None)  # null value (a tombstone)
    cases.append(Hostile(None, b"null key"))
    cases.append(Hostile(None, b"[1]"))
    cases.append(Hostile(None, None, raw_batch=True))  # neither key nor value
    cases.append(Hostile(uid() + b"k" * 200_000, b"huge key"))
    add(b"many headers", headers=[(f"h{i}", b"v") for i in range(3000)])
    return cases


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_values = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda doc: json.dumps(doc).encode()),
    st.fixed_dictionaries(
        {"event_id": st.text(max_size=10), "access_token": st.text(max_size=60)}
    ).map(lambda doc: json.dumps(doc).encode()),
    st.builds(token_with, st.binary(max_size=80), st.binary(max_size=40)).map(
        lambda token: json.dumps({"access_token": token}).encode()
    ),
)
_headers = st.lists(
    st.tuples(st.text(max_size=12), st.binary(max_size=20)).filter(lambda h: h[0] != ""),
    max_size=4,
)


def generated() -> list[Hostile]:
    """Hypothesis-drawn records: a handful of derandomized examples, each a list of records."""
    drawn: list[Hostile] = []

    @settings(
        max_examples=6,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(st.tuples(_values, _headers), min_size=5, max_size=15))
    def collect(records: list[tuple[bytes, Headers]]) -> None:
        drawn.extend(Hostile(uid(), value, headers) for value, headers in records)

    collect()
    return drawn


async def publish_all(bootstrap: str, topic: str, records: list[Hostile]) -> dict[int, int]:
    """Publish round-robin over the partitions; returns how many went to each."""
    per_partition: Counter[int] = Counter()
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * MB)
    gzip = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=4 * MB, compression_type="gzip"
    )
    await plain.start()
    await gzip.start()
    try:
        for i, record in enumerate(records):
            partition = i % PARTITIONS
            per_partition[partition] += 1
            if record.raw_batch:
                await send_one_batch(bootstrap, topic, partition, [_raw(record)])
                continue
            producer = gzip if record.gzip else plain
            await (
                await producer.send(
                    topic, record.value, key=record.key, headers=record.headers, partition=partition
                )
            )
    finally:
        await plain.stop()
        await gzip.stop()
    return dict(per_partition)


def _raw(record: Hostile) -> Any:
    return (record.key, record.value, record.headers)


@pytest.mark.timeout(240)
async def test_hostile_records_each_end_in_one_outcome_and_the_worker_never_stops(
    kafka_bootstrap: str, moto_server: MotoServer, make_pool: PoolFactory, tmp_path: Path
) -> None:
    names = await topics_with_partitions(
        kafka_bootstrap,
        PARTITIONS,
        source={"max.message.bytes": str(SOURCE_LIMIT)},
        dlq={"max.message.bytes": str(DLQ_LIMIT)},
    )
    pool = await make_pool(30)
    valid = [Hostile(k, carrying(u.access_token, k)) for u in pool.users for k in [uid()]]
    hostile = hand_made() + generated()
    mixed = _interleave(hostile, valid)
    per_partition = await publish_all(kafka_bootstrap, names.topic, mixed)

    settings_ = settings_for(kafka_bootstrap, moto_server.endpoint_url, names)
    worker = WorkerProcess(env_for(settings_), tmp_path / "worker.log", "--until-idle", "3")
    try:
        assert await worker.wait(within=180) == 0, "the worker stopped with an error"
    finally:
        worker.kill()

    log = (tmp_path / "worker.log").read_text(errors="replace")
    # Too-large dead letters poison the producer; writes caught on it go again on its successor
    # at once, not after a back-off, and no result is lost.
    assert "results write failed" not in log
    assert "dead-letter write failed; retrying" not in log

    committed, ends = await committed_and_ends(kafka_bootstrap, names.group, names.topic)
    assert ends == per_partition
    assert committed == ends, "a partition's commit point stopped"
    results = await read_all(kafka_bootstrap, names.results)
    keyed = Counter(r.key for r in results if r.key is not None)
    assert not [k[:40] for k, n in keyed.items() if n > 1], "a record was handled twice"
    expected_keys = {r.key for r in mixed if r.key is not None}
    assert set(keyed) == expected_keys, "a record ended without an outcome"
    assert sum(1 for r in results if r.key is None) == sum(1 for r in mixed if r.key is None)
    outcomes = {r.key: json.loads(r.value) for r in results if r.key is not None}
    for record in valid:
        assert (outcomes[record.key]["outcome"], outcomes[record.key]["reason"]) == (
            "signed_out",
            "global_sign_out",
        )
    hostile_outcomes = Counter(
        (d["outcome"], d["reason"]) for k, d in outcomes.items() if k not in {v.key for v in valid}
    ) + Counter(
        (json.loads(r.value)["outcome"], json.loads(r.value)["reason"])
        for r in results
        if r.key is None
    )
    assert {o for o, _ in hostile_outcomes} == {"dead_lettered"}, hostile_outcomes
    assert ("dead_lettered", "internal_error") not in hostile_outcomes, hostile_outcomes
    dead = await read_all(kafka_bootstrap, names.dlq)
    assert len(dead) == sum(hostile_outcomes.values()), "DLQ records differ from dead letters"
    coordinates = Counter(
        (_header(r, "signout.original.partition"), _header(r, "signout.original.offset"))
        for r in dead
    )
    assert max(coordinates.values()) == 1, "a record was dead-lettered twice"
    for record in dead:
        ours = [k for k, _ in record.headers if k.lower().startswith("signout.")]
        assert len(ours) == len({k.lower() for k in ours}), "a forged signout.* header survived"
    await assert_every_valid_token_is_revoked(pool, [u.access_token for u in pool.users])


def _header(record: Any, name: str) -> str:
    values = [v.decode() for k, v in record.headers if k == name]
    assert len(values) == 1, name
    return values[0]


def _interleave(hostile: list[Hostile], valid: list[Hostile]) -> list[Hostile]:
    """Valid requests spread among the hostile ones, so each shares partitions and batches."""
    step = max(1, len(hostile) // len(valid))
    waiting = list(valid)
    mixed: list[Hostile] = []
    for i, record in enumerate(hostile):
        if i % step == 0 and waiting:
            mixed.append(waiting.pop(0))
        mixed.append(record)
    return mixed + waiting
