"""Every time form Debezium emits, decoded to UTC instants; naive values in the source zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from schemas.temporal import (
    CONNECT_TIMESTAMP,
    ISO_TIMESTAMP,
    MICRO_TIMESTAMP,
    MICROS,
    MILLI_TIMESTAMP,
    MILLIS,
    NANO_TIMESTAMP,
    NANOS,
    ZONED_TIMESTAMP,
    TemporalError,
    decode_instant,
    infer_epoch_unit,
    is_unavailable,
)
from tests.support.changes import appointment, config, envelope, run, with_schema

T = datetime(2025, 10, 15, 14, 0, tzinfo=UTC)
MS = 1760536800000
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    "text",
    [
        "2025-10-15T14:00:00Z",
        "2025-10-15T14:00:00.000000Z",
        "2025-10-15T16:00:00+02:00",
        "2025-10-15T19:30:00+05:30",
    ],
)
def test_zoned_timestamps_decode_to_the_same_utc_instant(text: str) -> None:
    """ZonedTimestamp strings with any offset are absolute instants (the source zone does not apply)."""
    assert decode_instant(text, ZONED_TIMESTAMP, BERLIN) == T


def test_zoned_timestamp_with_odd_fraction_digits() -> None:
    """Debezium trims trailing zeros: .5Z and .12Z are valid."""
    assert decode_instant("2025-10-15T14:00:00.5Z", None, UTC) == T.replace(microsecond=500000)
    assert decode_instant("2025-10-15T14:00:00.12Z", None, UTC) == T.replace(microsecond=120000)


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (MS, MILLI_TIMESTAMP),
        (MS, CONNECT_TIMESTAMP),
        (MS * 1000, MICRO_TIMESTAMP),
        (MS * 1_000_000, NANO_TIMESTAMP),
    ],
)
def test_epoch_integers_decode_by_their_schema_name(value: int, name: str) -> None:
    """Timestamp (ms), MicroTimestamp (µs), NanoTimestamp (ns), Connect Timestamp (ms)."""
    assert decode_instant(value, name, UTC) == T


@pytest.mark.parametrize("value", [MS, MS * 1000, MS * 1_000_000])
def test_bare_epoch_integers_decode_by_magnitude(value: int) -> None:
    """Without a schema the unit is inferred from the magnitude."""
    assert decode_instant(value, None, UTC) == T


def test_schema_name_overrides_magnitude() -> None:
    """A millisecond-sized value declared MicroTimestamp is read as microseconds."""
    assert decode_instant(MS, MICRO_TIMESTAMP, UTC) == datetime(1970, 1, 21, 9, 2, 16, 800000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        (0, MILLIS),
        (10**14 - 1, MILLIS),
        (10**14, MICROS),
        (-(10**15), MICROS),
        (10**17 - 1, MICROS),
        (10**17, NANOS),
    ],
)
def test_magnitude_rule_boundaries(value: int, unit: str) -> None:
    """|v| < 1e14 -> ms, < 1e17 -> µs, else ns."""
    assert infer_epoch_unit(value) == unit


def test_naive_epoch_is_wall_clock_in_the_source_zone() -> None:
    """16:00 written as if UTC by Debezium is 16:00 Berlin time (CEST) = 14:00Z."""
    wall_16 = int(datetime(2025, 10, 15, 16, tzinfo=UTC).timestamp()) * 1_000_000
    assert decode_instant(wall_16, MICRO_TIMESTAMP, BERLIN) == T


def test_naive_iso_string_is_wall_clock_in_the_source_zone() -> None:
    """IsoTimestamp (time.precision.mode=isostring) has no offset: the source zone applies."""
    assert decode_instant("2025-10-15T16:00:00", ISO_TIMESTAMP, BERLIN) == T


def test_ambiguous_naive_time_takes_the_first_occurrence() -> None:
    """02:30 on the Berlin fall-back day is taken as CEST (fold=0): 00:30Z."""
    wall = int(datetime(2025, 10, 26, 2, 30, tzinfo=UTC).timestamp()) * 1_000_000
    assert decode_instant(wall, MICRO_TIMESTAMP, BERLIN) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("value", [True, 1.5, "tomorrow", [1], {"a": 1}, 10**30])
def test_non_timestamps_raise_temporal_error(value: object) -> None:
    """Booleans, floats, garbage strings, containers and out-of-range epochs are TemporalError."""
    with pytest.raises(TemporalError):
        decode_instant(value, None, UTC)


def test_none_stays_none() -> None:
    """A null column decodes to None."""
    assert decode_instant(None, MICRO_TIMESTAMP, UTC) is None


def test_toast_placeholder_is_recognised() -> None:
    """The placeholder is unavailable; real values are not."""
    assert is_unavailable("__debezium_unavailable_value")
    assert not is_unavailable("scheduled")


def test_naive_columns_in_a_non_utc_source_zone_key_the_real_hour() -> None:
    """timestamp columns holding Berlin wall time (16:00) key the UTC hour 14 with key zone UTC."""
    wall = int(datetime(2025, 10, 15, 16, tzinfo=UTC).timestamp()) * 1_000_000
    row = appointment(starts_at=wall, ends_at=wall + 3_600_000_000)
    bare = run(envelope("c", after=row), config(source_timezone="Europe/Berlin"))
    assert bare.keys[1] == "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15"
    keyed_locally = run(
        envelope("c", after=row), config(source_timezone="Europe/Berlin", key_timezone="Europe/Berlin")
    )
    assert keyed_locally.keys[1] == "cal_slots_15_1_123_2025-10-15-16_2025-10-15-17"


def test_schema_enabled_millisecond_timestamps_use_the_schema_unit() -> None:
    """timestamp(3) columns (io.debezium.time.Timestamp) in a schema-enabled envelope are milliseconds."""
    row = appointment(starts_at=MS, ends_at=MS + 3_600_000)
    msg = with_schema(envelope("c", after=row), {"starts_at": MILLI_TIMESTAMP, "ends_at": MILLI_TIMESTAMP})
    assert run(msg).keys[1] == "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15"
