"""`signout-worker dlq replay` re-publishes replayable dead letters once, with their headers."""

from __future__ import annotations

import json

from tests.integration.conftest import Names, publish, read_all
from worker.replay import replay
from worker.settings import KafkaSettings


async def test_replay_republishes_chosen_reasons_once_and_skips_redacted_tokens(
    kafka_bootstrap: str, names: Names
) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic=names.topic,
        dlq_topic=names.dlq,
        group_id=names.group,
    )
    kept = json.dumps(
        {"event_id": "e1", "user_pool_id": "us-east-1_x", "username": "alice"}
    ).encode()
    redacted = json.dumps({"event_id": "e2", "access_token": "redacted:sha256:0123456789abcdef"})
    other = json.dumps({"event_id": "e3", "user_pool_id": "us-east-1_x", "username": "bob"})
    dead = [
        (b"alice", kept, "retries_exhausted"),
        (b"carol", redacted.encode(), "retries_exhausted"),
        (b"bob", other.encode(), "user_not_found"),
    ]
    for key, value, reason in dead:
        headers = [("traceparent", b"00-abc-def-01"), ("signout.error.reason", reason.encode())]
        await publish(kafka_bootstrap, names.dlq, [(key, value)], headers)

    assert await replay(kafka, {"retries_exhausted"}, dry_run=False) == (1, 1)
    assert await replay(kafka, {"retries_exhausted"}, dry_run=False) == (0, 0)

    republished = await read_all(kafka_bootstrap, names.topic)
    assert [(r.key, r.value) for r in republished] == [(b"alice", kept)]
    assert republished[0].headers == (("traceparent", b"00-abc-def-01"),)
