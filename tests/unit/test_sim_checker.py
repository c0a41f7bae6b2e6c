"""The consistency checker on hand-built timelines: what is stale, what is not, at the boundaries."""

from __future__ import annotations

import pytest

from slotguard.sim.checker import Checker, percentile

A = (0, 10)  # calendar 0, hour 10
B = (0, 11)
KEY = "k"


def test_a_hit_offering_a_slot_booked_before_it_was_served_is_stale() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.read(2.0, KEY, [A])
    figures = checker.figures()
    assert (figures.stale_reads, figures.stale_window_max_ms) == (1, 1000.0)


def test_a_hit_served_before_the_commit_returned_is_not_stale() -> None:
    checker = Checker()
    checker.read(0.999, KEY, [A])
    checker.booked(A, at=1.0)
    assert checker.figures().stale_reads == 0


def test_a_hit_served_at_the_very_moment_the_commit_returned_is_stale() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.read(1.0, KEY, [A])
    assert checker.figures().stale_reads == 1


def test_a_hit_served_once_the_freeing_statement_was_sent_is_not_stale() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.freed(A, at=3.0)
    checker.read(3.0, KEY, [A])
    checker.read(2.5, KEY, [A])
    figures = checker.figures()
    assert figures.stale_reads == 1
    assert figures.stale_window_max_ms == 1500.0


def test_a_hit_offering_only_free_slots_is_not_stale() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.read(2.0, KEY, [B])
    assert checker.figures().stale_reads == 0


def test_a_miss_is_never_stale_and_lowers_the_hit_rate() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.missed()
    checker.read(2.0, KEY, [])
    figures = checker.figures()
    assert (figures.reads, figures.hits, figures.hit_rate, figures.stale_reads) == (2, 1, 0.5, 0)


def test_the_stale_window_runs_to_the_last_stale_read_of_each_booking() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.booked(B, at=1.0)
    for served in (1.1, 1.2, 1.4):
        checker.read(served, KEY, [A])
    checker.read(1.3, KEY, [B])
    figures = checker.figures()
    assert figures.stale_bookings == 2
    assert figures.stale_window_max_ms == pytest.approx(400.0)
    assert figures.stale_window_p50_ms == pytest.approx(300.0)


def test_a_rebooked_slot_is_judged_against_the_booking_of_that_moment() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.freed(A, at=2.0)
    checker.read(2.5, KEY, [A])  # free between the bookings: fine
    checker.booked(A, at=3.0)
    checker.read(3.5, KEY, [A])
    figures = checker.figures()
    assert (figures.stale_reads, figures.stale_window_max_ms) == (1, 500.0)


def test_a_fill_stale_when_it_landed_counts_and_after_the_delete_it_is_the_race() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.fill(1.05, KEY, [A])  # landed before the worker's delete: the delete removes it
    checker.invalidated(A, at=1.1)
    checker.fill(1.5, KEY, [A])  # the slow reader's write after the delete: the stale-fill race
    checker.fill(1.6, "other", [B])  # fresh
    figures = checker.figures()
    assert (figures.fills, figures.stale_fills, figures.stale_fills_after_delete) == (3, 2, 1)


def test_a_fill_a_lease_refused_is_neither_a_fill_nor_stale() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.invalidated(A, at=1.1)
    checker.fill(1.5, KEY, [A], landed=False)
    figures = checker.figures()
    assert (figures.fills, figures.fills_refused, figures.stale_fills) == (0, 1, 0)


def test_a_stale_read_after_its_slot_was_invalidated_is_counted_apart() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.read(1.05, KEY, [A])  # inside the commit→delete latency
    checker.invalidated(A, at=1.1)
    checker.read(1.2, KEY, [A])  # a stale fill is being served
    checker.invalidated(B, at=1.0)
    figures = checker.figures()
    assert (figures.stale_reads, figures.stale_reads_after_delete) == (2, 1)


def test_an_invalidation_before_the_commit_does_not_make_a_later_read_after_delete() -> None:
    checker = Checker()
    checker.invalidated(A, at=0.5)
    checker.booked(A, at=1.0)
    checker.read(1.2, KEY, [A])
    assert checker.figures().stale_reads_after_delete == 0


def test_figures_are_the_same_when_asked_twice() -> None:
    checker = Checker()
    checker.booked(A, at=1.0)
    checker.read(2.0, KEY, [A])
    assert checker.figures() == checker.figures()


def test_percentile_is_nearest_rank_and_none_for_nothing() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_an_invalidation_counts_from_the_end_of_its_timestamps_millisecond() -> None:
    """A record timestamp is whole milliseconds: a read sent within that millisecond may have reached
    Redis before the delete, so it is not counted as after the delete."""
    from slotguard.sim.engine import invalidated_by

    assert invalidated_by(1_000, 0.0) == 1.001
    assert invalidated_by(1_000, 0.5) == pytest.approx(0.501)
