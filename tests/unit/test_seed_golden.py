"""The seed design's examples, verbatim: key strings and windows must come out exactly as drawn."""

from __future__ import annotations

from tests.support.changes import appointment, config, envelope, run


def test_booking_at_14_invalidates_the_hour_before_the_hour_and_the_hour_after() -> None:
    """Seed step 2: a 14:00-15:00 booking of company 15, branch 1, event type 123 -> buckets 13, 14, 15."""
    outcome = run(envelope("c", after=appointment()))
    assert outcome.keys == [
        "cal_slots_15_1_123_2025-10-15-13_2025-10-15-14",
        "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15",
        "cal_slots_15_1_123_2025-10-15-15_2025-10-15-16",
    ]
    assert "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15" in outcome.keys  # the seed's example key
    assert [e.type for e in outcome.events] == ["booked"]


def test_cross_midnight_booking_yields_the_seeds_three_keys_on_both_dates() -> None:
    """Seed edge case 2: 23:30-00:30 -> 22, 23 and 00 of the next day."""
    row = appointment(starts_at="2025-10-15T23:30:00Z", ends_at="2025-10-16T00:30:00Z")
    assert run(envelope("c", after=row)).keys == [
        "cal_slots_15_1_123_2025-10-15-22_2025-10-15-23",
        "cal_slots_15_1_123_2025-10-15-23_2025-10-16-00",
        "cal_slots_15_1_123_2025-10-16-00_2025-10-16-01",
    ]


def test_reschedule_from_14_to_16_invalidates_old_and_new_windows() -> None:
    """Seed edge case 1: the 14:00 window frees up and the 16:00 window fills; both are invalidated once."""
    old = appointment()
    new = appointment(starts_at="2025-10-15T16:00:00Z", ends_at="2025-10-15T17:00:00Z")
    outcome = run(envelope("u", before=old, after=new))
    hours = [
        "13_2025-10-15-14",
        "14_2025-10-15-15",
        "15_2025-10-15-16",
        "16_2025-10-15-17",
        "17_2025-10-15-18",
    ]
    assert outcome.keys == [f"cal_slots_15_1_123_2025-10-15-{h}" for h in hours]
    assert [e.type for e in outcome.events] == ["rescheduled"]


def test_two_companies_booking_the_same_hour_touch_only_their_own_keys() -> None:
    """Seed edge case 3: company 15/branch 1 and company 20/branch 2 both book 14:00, keys stay apart."""
    a = run(envelope("c", after=appointment()))
    b = run(envelope("c", after=appointment(id=43, company_id=20, branch_id=2, service_id=9)))
    assert all(k.startswith("cal_slots_15_1_123_") for k in a.keys)
    assert all(k.startswith("cal_slots_20_2_123_") for k in b.keys)
    assert "cal_slots_20_2_123_2025-10-15-14_2025-10-15-15" in b.keys
    assert not set(a.keys) & set(b.keys)


def test_missing_event_type_with_skip_policy_invalidates_nothing_and_warns() -> None:
    """Seed edge case 4: no calcom_event_type_id and policy skip -> no keys, a warning, the booking still reported."""
    outcome = run(envelope("c", after=appointment(service_id=10)), config(unknown_event_type="skip"))
    assert outcome.keys == []
    assert outcome.redis_keys == []
    assert any("no event type" in w and "skip" in w for w in outcome.warnings)
    assert outcome.events[0].event_type_id is None
