"""`signout-worker dlq replay` re-publishes replayable dead letters once, with their headers, to
the topic each came from when that is one of the worker's source topics."""

from __future__ import annotations

import json

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.conftest import Names, publish, read_all
from worker.replay import replay
from worker.settings import KafkaSettings


def _kafka(bootstrap: str, names: Names, **extra: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        topic=names.topic,
        dlq_topic=names.dlq,
        group_id=names.group,
        **extra,
    )


def _admin_request(event_id: str, username: str) -> bytes:
    document = {"event_id": event_id, "user_pool_id": "us-east-1_x", "username": username}
    return json.dumps(document).encode()


async def _create(bootstrap: str, *topics: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1) for name in topics])
    finally:
        await admin.close()


async def test_replay_republishes_chosen_reasons_once_and_skips_redacted_tokens(
    kafka_bootstrap: str, names: Names
) -> None:
    kafka = _kafka(kafka_bootstrap, names)
    kept = _admin_request("e1", "alice")
    redacted = json.dumps({"event_id": "e2", "access_token": "redacted:sha256:0123456789abcdef"})
    other = _admin_request("e3", "bob")
    dead = [
        (b"alice", kept, "retries_exhausted"),
        (b"carol", redacted.encode(), "retries_exhausted"),
        (b"bob", other, "user_not_found"),
    ]
    for key, value, reason in dead:
        headers = [
            ("traceparent", b"00-abc-def-01"),
            ("signout.error.reason", reason.encode()),
            ("signout.original.topic", names.topic.encode()),
        ]
        await publish(kafka_bootstrap, names.dlq, [(key, value)], headers)

    first = await replay(kafka, {"retries_exhausted"}, dry_run=False)
    assert (first.replayed, first.skipped, first.redirected) == (1, 1, 0)
    second = await replay(kafka, {"retries_exhausted"}, dry_run=False)
    assert (second.replayed, second.skipped) == (0, 0)

    republished = await read_all(kafka_bootstrap, names.topic)
    assert [(r.key, r.value) for r in republished] == [(b"alice", kept)]
    assert republished[0].headers == (("traceparent", b"00-abc-def-01"),)


async def test_each_dead_letter_goes_back_to_its_own_lane_and_a_forged_origin_is_not_followed(
    kafka_bootstrap: str, names: Names
) -> None:
    urgent, elsewhere = names.topic + ".urgent", names.topic + ".elsewhere"
    await _create(kafka_bootstrap, urgent, elsewhere)
    kafka = _kafka(kafka_bootstrap, names, urgent_topic=urgent)
    origins: list[tuple[bytes, str | None]] = [
        (b"bulk-user", names.topic),
        (b"urgent-user", urgent),
        (b"forged-user", elsewhere),  # a header naming a topic the worker does not consume
        (b"no-origin", None),
    ]
    for key, origin in origins:
        headers = [("signout.error.reason", b"retries_exhausted")]
        if origin is not None:
            headers.append(("signout.original.topic", origin.encode()))
        value = _admin_request(key.decode(), key.decode())
        await publish(kafka_bootstrap, names.dlq, [(key, value)], headers)

    summary = await replay(kafka, {"retries_exhausted"}, dry_run=False)

    assert (summary.replayed, summary.redirected) == (4, 2)
    assert f"2 named no source topic of this worker as their origin and went to {names.topic}" in (
        summary.line(kafka)
    )
    on_requests = {r.key for r in await read_all(kafka_bootstrap, names.topic)}
    on_urgent = {r.key for r in await read_all(kafka_bootstrap, urgent)}
    assert on_requests == {b"bulk-user", b"forged-user", b"no-origin"}
    assert on_urgent == {b"urgent-user"}
    assert await read_all(kafka_bootstrap, elsewhere) == []


async def test_an_urgent_origin_goes_to_the_requests_topic_when_the_lane_is_not_configured(
    kafka_bootstrap: str, names: Names
) -> None:
    kafka = _kafka(kafka_bootstrap, names)  # no urgent topic in this deployment
    headers = [
        ("signout.error.reason", b"internal_error"),
        ("signout.original.topic", (names.topic + ".urgent").encode()),
    ]
    await publish(kafka_bootstrap, names.dlq, [(b"u", _admin_request("e9", "u"))], headers)
    summary = await replay(kafka, {"internal_error"}, dry_run=False)
    assert (summary.sent, summary.redirected) == ({names.topic: 1}, 1)
    assert [r.key for r in await read_all(kafka_bootstrap, names.topic)] == [b"u"]
