"""The worker's own view of a consumed record and of its terminal result (no Kafka types here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from worker.errors import Outcome, Reason, SignOutError
from worker.events import SignOutRequest, Target


class Lane(StrEnum):
    """Which input a record came from: the optional urgent topic overtakes the requests topic."""

    URGENT = "urgent"
    BULK = "bulk"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = -1
    # Why the Kafka client could not decode it (set only by worker.salvage): a dead letter at once.
    undecodable: str | None = None

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


def header(headers: Iterable[tuple[str, bytes | None]], name: str) -> str | None:
    """The first header named `name` (case-insensitive, as Kafka tooling treats them), as text."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return bytes(value or b"").decode("utf-8", "replace")
    return None


@dataclass(frozen=True, slots=True)
class Result:
    """Exactly one terminal outcome of one record (contracts.md §2)."""

    outcome: Outcome
    reason: Reason
    attempts: int = 0
    error: SignOutError | None = None
    request: SignOutRequest | None = field(default=None, repr=False)
    target: Target | None = None
    lane: Lane = Lane.BULK
