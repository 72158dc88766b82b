"""dedup.py: event reservations and covered targets, bounded in time and size."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.dedup import RecentlySeen

T0 = 1_700_000_000.0


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_reserve_refuses_a_second_reservation_until_released() -> None:
    seen = RecentlySeen(window_seconds=60, max_entries=10)
    assert seen.reserve("e-1", T0)
    assert not seen.reserve("e-1", T0 + 1)
    assert seen.reserve("e-2", T0 + 1)
    seen.release("e-1")
    assert seen.reserve("e-1", T0 + 2)


def test_release_of_an_unknown_event_is_harmless() -> None:
    seen = RecentlySeen(window_seconds=60, max_entries=10)
    seen.release("never")
    assert seen.reserve("never", T0)


def test_reservations_expire_after_the_window() -> None:
    seen = RecentlySeen(window_seconds=60, max_entries=10)
    assert seen.reserve("e-1", T0)
    assert not seen.reserve("e-1", T0 + 60)  # the window is inclusive
    assert seen.reserve("e-1", T0 + 60.001)


def test_max_entries_evicts_the_oldest() -> None:
    seen = RecentlySeen(window_seconds=3600, max_entries=3)
    for i in range(4):
        assert seen.reserve(f"e-{i}", T0 + i)
    assert seen.reserve("e-0", T0 + 5)  # evicted, so new again
    assert not seen.reserve("e-3", T0 + 5)
    assert not seen.reserve("e-0", T0 + 6)


def test_a_request_decided_before_the_sign_out_is_covered() -> None:
    seen = RecentlySeen(window_seconds=300, max_entries=10)
    seen.signed_out("admin:p/alice", T0)
    assert seen.covered("admin:p/alice", _at(T0 - 10), T0 + 1)
    assert seen.covered("admin:p/alice", _at(T0), T0 + 1)  # at the same instant


def test_a_request_decided_after_the_sign_out_is_not_covered() -> None:
    seen = RecentlySeen(window_seconds=300, max_entries=10)
    seen.signed_out("admin:p/alice", T0)
    assert not seen.covered("admin:p/alice", _at(T0 + 0.5), T0 + 1)


def test_an_undated_request_is_never_covered() -> None:
    seen = RecentlySeen(window_seconds=300, max_entries=10)
    seen.signed_out("admin:p/alice", T0)
    assert not seen.covered("admin:p/alice", None, T0 + 1)


def test_another_target_is_not_covered() -> None:
    seen = RecentlySeen(window_seconds=300, max_entries=10)
    seen.signed_out("admin:p/alice", T0)
    assert not seen.covered("admin:p/bob", _at(T0 - 10), T0 + 1)


def test_covered_expires_after_the_window() -> None:
    seen = RecentlySeen(window_seconds=300, max_entries=10)
    seen.signed_out("admin:p/alice", T0)
    assert seen.covered("admin:p/alice", _at(T0 - 10), T0 + 300)
    assert not seen.covered("admin:p/alice", _at(T0 - 10), T0 + 301)


def test_a_later_sign_out_of_the_same_target_refreshes_it() -> None:
    seen = RecentlySeen(window_seconds=300, max_entries=2)
    seen.signed_out("a", T0)
    seen.signed_out("b", T0 + 1)
    seen.signed_out("a", T0 + 200)  # moves to the back: now b is the oldest
    seen.signed_out("c", T0 + 201)
    assert not seen.covered("b", _at(T0), T0 + 202)
    assert seen.covered("a", _at(T0 + 100), T0 + 202)
    assert seen.covered("a", _at(T0 + 100), T0 + 450)  # window counts from the later sign-out


def test_targets_are_bounded_by_max_entries() -> None:
    seen = RecentlySeen(window_seconds=300, max_entries=2)
    for i, key in enumerate(("a", "b", "c")):
        seen.signed_out(key, T0 + i)
    assert not seen.covered("a", _at(T0 - 1), T0 + 3)
    assert seen.covered("b", _at(T0 - 1), T0 + 3)
    assert seen.covered("c", _at(T0 - 1), T0 + 3)


def test_window_zero_disables_both() -> None:
    seen = RecentlySeen(window_seconds=0, max_entries=10)
    assert seen.reserve("e-1", T0)
    assert seen.reserve("e-1", T0)
    seen.signed_out("a", T0)
    assert not seen.covered("a", _at(T0 - 10), T0)
