"""The core's events match their golden documents; rows, classifications and outcomes keep the
properties callers rely on."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import msgspec.structs
import orjson
import pytest

from processor.core.classify import Classification, Kind
from processor.core.outcome import Outcome
from schemas.events import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from schemas.rows import AppointmentRow
from tests.support.changes import appointment, config, envelope, run

CHANGES = {
    "booked": envelope("c", after=appointment()),
    "booked_without_lsn": envelope("c", after=appointment(), lsn=None),
    "rescheduled": envelope(
        "u",
        before=appointment(),
        after=appointment(starts_at="2025-10-15T16:00:00Z", ends_at="2025-10-15T17:00:00Z", branch_id=2),
    ),
    "cancelled": envelope("u", before=appointment(), after=appointment(status="cancelled")),
    "deleted_without_source": {**envelope("d", before=appointment(ends_at=None)), "source": None},
    "unresolved_service": envelope("c", after=appointment(service_id=None)),
}


GOLDEN = json.loads((Path(__file__).parent / "golden" / "events.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_events_match_their_golden_json(name: str) -> None:
    """Each event the core builds serialises to the reviewed golden document, field for field."""
    (event,) = run(CHANGES[name]).events
    assert isinstance(event, AppointmentBooked | AppointmentRescheduled | AppointmentCancelled)
    assert orjson.loads(event.to_json()) == GOLDEN[name]
    # And the hand-built event equals what model_validate makes of the golden document.
    assert event == type(event).model_validate(GOLDEN[name])


def test_rows_and_classifications_are_frozen_values() -> None:
    """Rows and classifications compare by value, copy with a change, and cannot be changed in place."""
    row = AppointmentRow("1", "15", None, "7", None, None, "scheduled", None)
    assert row.unavailable == frozenset()
    assert msgspec.structs.replace(row, id="2") == AppointmentRow(
        "2", "15", None, "7", None, None, "scheduled", None
    )
    with pytest.raises(AttributeError):
        row.id = "3"  # type: ignore[misc]
    cls = Classification(Kind.BOOKED, after=row)
    assert cls == Classification(Kind.BOOKED, None, row, None, (), ())
    with pytest.raises(AttributeError):
        cls.kind = Kind.NOTHING  # type: ignore[misc]


def test_default_outcomes_share_no_mutable_field() -> None:
    """Every Outcome() gets its own key lists; its records and warnings are immutable tuples."""
    a, b = Outcome(), Outcome()
    assert a == b
    assert a.keys is not b.keys
    assert a.redis_keys is not b.redis_keys
    assert (a.records, a.warnings) == ((), ())
    assert Outcome.__struct_fields__[:4] == ("records", "keys", "redis_keys", "warnings")


def test_cached_key_renders_are_fresh_lists() -> None:
    """A cached window's keys come back as a new list each time: a caller's edit does not leak."""
    template = config().template
    buckets = [1760536800 + i * 3600 for i in range(3)]
    first = template.render("15", "1", "123", buckets)
    first.append("tampered")
    again = template.render("15", "1", "123", buckets)
    assert again == first[:3]
    assert again[0] == "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15"


def test_long_windows_render_the_same_with_and_without_the_cache() -> None:
    """Windows too long to cache render every bucket, identically on each call."""
    template = config().template
    buckets = [1760536800 + i * 3600 for i in range(48)]
    keys = template.render("15", None, "123", buckets)
    assert len(keys) == 48
    assert keys == template.render("15", None, "123", buckets)
    assert keys[-1] == "cal_slots_15__123_2025-10-17-13_2025-10-17-14"
