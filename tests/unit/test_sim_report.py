"""The demo says, beside the TTL-only baseline, whether each mode met the goal."""

from __future__ import annotations

from slotguard.sim.report import verdict


def test_a_mode_under_one_percent_of_the_baseline_and_none_after_delete_meets_the_goal() -> None:
    modes = {
        "ttl-only": {"stale_reads": 12_000, "stale_reads_after_delete": 9_000},
        "guarded": {"stale_reads": 20, "stale_reads_after_delete": 0},
    }
    (sentence,) = verdict(modes)
    assert sentence.startswith("guarded: 20 stale reads against 12,000 with the TTL alone (0.17%)")
    assert "the goal is met" in sentence


def test_a_stale_read_after_the_delete_misses_the_goal() -> None:
    modes = {
        "ttl-only": {"stale_reads": 12_000, "stale_reads_after_delete": 9_000},
        "invalidate": {"stale_reads": 30, "stale_reads_after_delete": 4},
    }
    (sentence,) = verdict(modes)
    assert "is NOT met" in sentence


def test_without_a_baseline_there_is_no_verdict() -> None:
    assert verdict({"guarded": {"stale_reads": 20, "stale_reads_after_delete": 0}}) == []
