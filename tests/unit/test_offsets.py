"""offsets.py: the committable offset never passes an unfinished record, checked against a model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from worker.offsets import OffsetTracker, PartitionOffsets

PARTITIONS = ("orders-0", "orders-1", "users-0")


# -- examples ----------------------------------------------------------------------------------


def test_nothing_started_means_nothing_to_commit() -> None:
    offsets = PartitionOffsets()
    assert offsets.safe_offset() is None
    assert offsets.to_commit() is None
    assert offsets.pending == 0
    assert offsets.last_committed is None


def test_out_of_order_finish_holds_the_commit_at_the_oldest_unfinished() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12):
        offsets.start(offset)
    assert offsets.safe_offset() == 10
    offsets.done(12)
    offsets.done(11)
    assert offsets.safe_offset() == 10
    assert offsets.pending == 1
    offsets.done(10)
    assert offsets.safe_offset() == 13
    assert offsets.pending == 0


def test_gaps_between_offsets_are_skipped() -> None:
    offsets = PartitionOffsets()
    offsets.start(5)
    offsets.start(9)  # 6..8 compacted away or transaction markers
    offsets.done(5)
    assert offsets.safe_offset() == 9
    offsets.done(9)
    assert offsets.safe_offset() == 10


def test_starting_an_offset_below_the_next_one_is_refused() -> None:
    offsets = PartitionOffsets()
    offsets.start(7)
    with pytest.raises(ValueError, match="out of order"):
        offsets.start(7)
    with pytest.raises(ValueError, match="out of order"):
        offsets.start(3)


def test_done_twice_and_done_of_unknown_offsets_change_nothing() -> None:
    offsets = PartitionOffsets()
    offsets.start(1)
    offsets.start(2)
    offsets.start(4)
    offsets.done(2)
    offsets.done(2)
    offsets.done(3)  # a gap: never started
    offsets.done(0)  # before anything started
    offsets.done(99)  # beyond the last started
    assert offsets.pending == 2
    assert offsets.safe_offset() == 1
    offsets.done(1)
    assert offsets.safe_offset() == 4
    assert offsets.pending == 1


def test_to_commit_reports_a_move_once_it_is_acknowledged() -> None:
    offsets = PartitionOffsets()
    offsets.start(0)
    offsets.done(0)
    assert offsets.to_commit() == 1
    assert offsets.to_commit() == 1  # not acknowledged yet: still due
    offsets.committed(1)
    assert offsets.to_commit() is None
    assert offsets.last_committed == 1
    offsets.start(1)
    assert offsets.to_commit() is None  # started but unfinished: safe offset still 1
    offsets.done(1)
    assert offsets.to_commit() == 2


def test_tracker_keeps_partitions_apart() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.start("a", 0)
    tracker.start("a", 1)
    tracker.start("b", 100)
    tracker.done("a", 1)
    tracker.done("b", 100)
    assert tracker.to_commit() == {"a": 0, "b": 101}
    assert tracker.pending("a") == 1
    assert tracker.pending("b") == 0
    assert tracker.pending() == 1
    tracker.committed({"a": 0, "b": 101})
    assert tracker.to_commit() == {}
    assert tracker.committed_offset("b") == 101
    assert sorted(tracker) == ["a", "b"]


def test_tracker_ignores_unknown_partitions() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.done("ghost", 3)
    tracker.committed({"ghost": 4})
    assert tracker.to_commit() == {}
    assert tracker.pending("ghost") == 0
    assert tracker.committed_offset("ghost") is None
    assert list(tracker) == []


def test_forget_drops_a_revoked_partition_and_lets_it_start_afresh() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.start("a", 50)
    tracker.start("b", 7)
    tracker.committed({"a": 50})
    tracker.forget("a")
    tracker.forget("never-assigned")
    assert list(tracker) == ["b"]
    assert tracker.pending("a") == 0
    assert tracker.pending() == 1
    assert tracker.committed_offset("a") is None
    tracker.done("a", 50)  # a late finish of a revoked record does not resurrect it
    assert "a" not in tracker.to_commit()
    tracker.start("a", 40)  # the new owner may be handed it back from an older commit
    tracker.done("a", 40)
    assert tracker.to_commit() == {"a": 41, "b": 7}


# -- a property over whole histories of one partition ------------------------------------------


@given(
    first=st.integers(0, 10_000),
    gaps=st.lists(st.integers(0, 4), min_size=1, max_size=40),
    data=st.data(),
)
def test_finishing_everything_in_any_order_commits_one_past_the_last(
    first: int, gaps: list[int], data: st.DataObject
) -> None:
    started = []
    offset = first
    for gap in gaps:
        started.append(offset)
        offset += 1 + gap
    offsets = PartitionOffsets()
    for offset in started:
        offsets.start(offset)
    order = data.draw(st.permutations(started))
    previous = offsets.safe_offset()
    for finished, offset in enumerate(order, start=1):
        offsets.done(offset)
        safe = offsets.safe_offset()
        unfinished = set(started) - set(order[:finished])
        assert safe is not None
        assert previous is not None
        assert safe >= previous  # never moves back
        assert all(safe <= u for u in unfinished)  # never past an unfinished record
        previous = safe
    assert offsets.safe_offset() == started[-1] + 1
    assert offsets.pending == 0


# -- the stateful model across several partitions ----------------------------------------------


class PartitionModel:
    """The obviously correct version: sets and a min/max."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.done: set[int] = set()
        self.acknowledged: int | None = None

    @property
    def unfinished(self) -> set[int]:
        return set(self.started) - self.done

    def committable(self) -> int | None:
        if not self.started:
            return None
        if self.unfinished:
            return min(self.unfinished)
        return max(self.started) + 1


class OffsetMachine(RuleBasedStateMachine):
    """Random interleavings of start, done (any order, duplicates), commits and revocations."""

    partitions = Bundle("partitions")

    def __init__(self) -> None:
        super().__init__()
        self.tracker: OffsetTracker[str] = OffsetTracker()
        self.single: dict[str, PartitionOffsets] = {}
        self.model: dict[str, PartitionModel] = {}
        self.highest_safe: dict[str, int] = {}

    @initialize(target=partitions, names=st.sampled_from(PARTITIONS))
    def first_partition(self, names: str) -> str:
        return names

    @rule(target=partitions, name=st.sampled_from(PARTITIONS))
    def more_partitions(self, name: str) -> str:
        return name

    @rule(p=partitions, first=st.integers(0, 1_000), gap=st.integers(0, 5))
    def start(self, p: str, first: int, gap: int) -> None:
        model = self.model.setdefault(p, PartitionModel())
        offset = model.started[-1] + 1 + gap if model.started else first
        model.started.append(offset)
        self.tracker.start(p, offset)
        self.single.setdefault(p, PartitionOffsets()).start(offset)

    @precondition(lambda self: any(m.started for m in self.model.values()))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(k for k, m in self.model.items() if m.started)))
        offset = data.draw(st.sampled_from(self.model[p].started))  # duplicates allowed
        self.model[p].done.add(offset)
        self.tracker.done(p, offset)
        self.single[p].done(offset)

    @precondition(lambda self: any(m.started for m in self.model.values()))
    @rule(data=st.data())
    def done_of_an_offset_never_started(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(k for k, m in self.model.items() if m.started)))
        started = self.model[p].started
        offset = data.draw(
            st.integers(started[0] - 3, started[-1] + 3).filter(lambda o: o not in started)
        )
        self.tracker.done(p, offset)
        self.single[p].done(offset)

    @rule(p=partitions, offset=st.integers(0, 2_000))
    def done_on_a_partition_maybe_unknown(self, p: str, offset: int) -> None:
        if p in self.model:
            return  # covered by the rules above
        self.tracker.done(p, offset)

    @rule()
    def commit_acknowledged(self) -> None:
        offsets = self.tracker.to_commit()
        self.tracker.committed(offsets)
        for p, offset in offsets.items():
            self.model[p].acknowledged = offset
            self.single[p].committed(offset)

    @rule()
    def commit_failed(self) -> None:
        self.tracker.to_commit()  # asked, but the broker never acknowledged

    @rule(p=partitions)
    def forget(self, p: str) -> None:
        self.tracker.forget(p)
        self.model.pop(p, None)
        self.single.pop(p, None)
        self.highest_safe.pop(p, None)

    @invariant()
    def safe_offsets_match_the_model(self) -> None:
        for p, model in self.model.items():
            safe = self.single[p].safe_offset()
            assert safe == model.committable()
            if safe is not None:
                assert all(safe <= u for u in model.unfinished)
                assert safe >= self.highest_safe.get(p, safe)
                self.highest_safe[p] = safe

    @invariant()
    def to_commit_matches_the_model(self) -> None:
        expected = {
            p: m.committable()
            for p, m in self.model.items()
            if m.committable() is not None and m.committable() != m.acknowledged
        }
        moves = self.tracker.to_commit()
        assert moves == expected
        for p, offset in moves.items():
            assert all(offset <= u for u in self.model[p].unfinished)
        for p, single in self.single.items():
            assert single.to_commit() == expected.get(p)

    @invariant()
    def pending_and_committed_match_the_model(self) -> None:
        for p, model in self.model.items():
            assert self.tracker.pending(p) == len(model.unfinished)
            assert self.single[p].pending == len(model.unfinished)
            assert self.tracker.committed_offset(p) == model.acknowledged
        assert self.tracker.pending() == sum(len(m.unfinished) for m in self.model.values())
        assert set(self.tracker) == set(self.model)
        for p in PARTITIONS:
            if p not in self.model:
                assert self.tracker.pending(p) == 0
                assert self.tracker.committed_offset(p) is None


OffsetMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestOffsetMachine = OffsetMachine.TestCase
