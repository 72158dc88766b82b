"""Where `dlq replay` sends a dead letter, and the one line it prints."""

from __future__ import annotations

from collections import Counter

import pytest

from worker.replay import ReplaySummary, destination
from worker.settings import KafkaSettings

LANES = KafkaSettings(topic="req", urgent_topic="req.urgent")
BULK_ONLY = KafkaSettings(topic="req")


@pytest.mark.parametrize(
    ("kafka", "origin", "expected"),
    [
        (LANES, "req", ("req", False)),
        (LANES, "req.urgent", ("req.urgent", False)),
        (LANES, "req.dlq", ("req", True)),
        (LANES, "payments.requests", ("req", True)),
        (LANES, "REQ.URGENT", ("req", True)),  # topic names are case-sensitive
        (LANES, "", ("req", True)),
        (LANES, None, ("req", True)),
        (BULK_ONLY, "req.urgent", ("req", True)),
    ],
)
def test_only_a_source_topic_of_the_worker_is_followed(
    kafka: KafkaSettings, origin: str | None, expected: tuple[str, bool]
) -> None:
    assert destination(kafka, origin) == expected


def test_the_summary_line_names_each_destination_and_any_redirect() -> None:
    summary = ReplaySummary(Counter({"req": 3, "req.urgent": 1}), skipped=2, redirected=1)
    assert summary.line(LANES) == (
        "replayed 4 (3 to req, 1 to req.urgent), skipped 2 (redacted tokens cannot be replayed);"
        " 1 named no source topic of this worker as their origin and went to req"
    )


def test_the_summary_line_of_nothing_to_replay() -> None:
    assert ReplaySummary().line(LANES) == (
        "replayed 0, skipped 0 (redacted tokens cannot be replayed)"
    )
