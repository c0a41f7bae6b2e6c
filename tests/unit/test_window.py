"""Hour buckets: the seed's window, long appointments, padding, DST and half-hour zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processor.core.window import MAX_BUCKETS, HourWindow
from tests.support.changes import appointment, config, envelope, run


def _tails(keys: list[str]) -> list[str]:
    """The '<start>_<end>' part of seed-format keys."""
    return [k.split("_", 5)[5] for k in keys]


def _book(starts_at: str, ends_at: str | None, **settings: object) -> list[str]:
    outcome = run(envelope("c", after=appointment(starts_at=starts_at, ends_at=ends_at)), config(**settings))
    return _tails(outcome.keys)


def test_missing_end_counts_as_one_hour() -> None:
    """ends_at null -> the same three buckets as a 14:00-15:00 appointment."""
    assert _book("2025-10-15T14:00:00Z", None) == _book("2025-10-15T14:00:00Z", "2025-10-15T15:00:00Z")


def test_long_appointment_covers_every_hour_it_occupies_plus_the_hour_before() -> None:
    """14:00-18:30 -> 13 through 18 (the bucket holding its last minute)."""
    assert _book("2025-10-15T14:00:00Z", "2025-10-15T18:30:00Z") == [
        f"2025-10-15-{h:02d}_2025-10-15-{h + 1:02d}" for h in range(13, 19)
    ]


def test_appointment_ending_on_the_hour_does_not_cover_the_bucket_it_ends_at_beyond_the_padding() -> None:
    """14:00-17:00 -> 13..16: 17:00 itself is not occupied."""
    assert _book("2025-10-15T14:00:00Z", "2025-10-15T17:00:00Z")[-1] == "2025-10-15-16_2025-10-15-17"


def test_end_before_start_still_covers_the_start_window() -> None:
    """Inconsistent rows (end <= start) are keyed like a one-hour appointment."""
    assert _book("2025-10-15T14:00:00Z", "2025-10-15T13:00:00Z") == _book("2025-10-15T14:00:00Z", None)


def test_padding_is_configurable() -> None:
    """window_hours_before=2, after=0 -> 12, 13, 14 for a 14:00-15:00 appointment."""
    assert _book(
        "2025-10-15T14:00:00Z", "2025-10-15T15:00:00Z", window_hours_before=2, window_hours_after=0
    ) == [
        "2025-10-15-12_2025-10-15-13",
        "2025-10-15-13_2025-10-15-14",
        "2025-10-15-14_2025-10-15-15",
    ]


def test_berlin_fall_back_covers_both_two_oclock_hours_with_distinct_keys() -> None:
    """2025-10-26 in Europe/Berlin: 02:30 CEST-02:30 CET -> 01-02, 02(CEST)-02(CET), 02(CET)-03."""
    assert _book("2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z", key_timezone="Europe/Berlin") == [
        "2025-10-26-01_2025-10-26-02",
        "2025-10-26-02_2025-10-26-02",
        "2025-10-26-02_2025-10-26-03",
    ]


def test_berlin_spring_forward_skips_the_missing_hour() -> None:
    """2025-03-30 in Europe/Berlin: 01:30 CET-03:30 CEST -> 00-01, 01-03, 03-04 (02:00 never exists)."""
    assert _book("2025-03-30T00:30:00Z", "2025-03-30T01:30:00Z", key_timezone="Europe/Berlin") == [
        "2025-03-30-00_2025-03-30-01",
        "2025-03-30-01_2025-03-30-03",
        "2025-03-30-03_2025-03-30-04",
    ]


def test_kolkata_buckets_are_whole_local_hours() -> None:
    """+05:30: 14:00-15:00 IST (08:30Z) -> 13, 14, 15 IST."""
    assert _book("2025-10-15T08:30:00Z", "2025-10-15T09:30:00Z", key_timezone="Asia/Kolkata") == [
        "2025-10-15-13_2025-10-15-14",
        "2025-10-15-14_2025-10-15-15",
        "2025-10-15-15_2025-10-15-16",
    ]


def test_kolkata_half_hour_start_falls_in_the_local_hour_it_is_in() -> None:
    """08:00Z is 13:30 IST: buckets 12, 13, 14 IST."""
    assert _book("2025-10-15T08:00:00Z", "2025-10-15T09:00:00Z", key_timezone="Asia/Kolkata") == [
        "2025-10-15-12_2025-10-15-13",
        "2025-10-15-13_2025-10-15-14",
        "2025-10-15-14_2025-10-15-15",
    ]


def test_bucket_of_is_the_start_of_the_key_zone_hour() -> None:
    """bucket_of floors to the local hour, not the UTC hour."""
    window = HourWindow(config(key_timezone="Asia/Kolkata").window.zone)
    instant = int(datetime(2025, 10, 15, 8, 59, tzinfo=UTC).timestamp())
    assert window.bucket_of(instant) == int(datetime(2025, 10, 15, 8, 30, tzinfo=UTC).timestamp())


def test_very_long_appointment_is_truncated_with_a_warning() -> None:
    """A 40-day appointment yields MAX_BUCKETS keys and says it was truncated."""
    outcome = run(envelope("c", after=appointment(ends_at="2025-11-24T14:00:00Z")))
    assert len(outcome.keys) == MAX_BUCKETS
    assert any("only the first are invalidated" in w for w in outcome.warnings)


@pytest.mark.parametrize("before_after", [(0, 0), (3, 5)])
def test_window_size_follows_padding(before_after: tuple[int, int]) -> None:
    """A one-hour appointment covers before + 1 + after buckets."""
    before, after = before_after
    keys = _book("2025-10-15T14:00:00Z", None, window_hours_before=before, window_hours_after=after)
    assert len(keys) == before + 1 + max(after, 0)
