"""The worker's own view of a consumed record and of its terminal result (no Kafka types here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.errors import Outcome, Reason, SignOutError
from worker.events import SignOutRequest, Target


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = -1

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("utf-8", "replace")
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
