"""Column mapping and the TOAST placeholder in row images."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError
from schemas.rows import AppointmentReader
from schemas.temporal import TOAST_PLACEHOLDER
from tests.support.changes import appointment, config, envelope, run

LEGACY_COLUMNS = {
    "company_id": "tenant_id",
    "starts_at": "start_time",
    "ends_at": "end_time",
    "status": "state",
}


def _legacy_row(**changes: object) -> dict[str, object]:
    row = appointment()
    for logical, real in LEGACY_COLUMNS.items():
        row[real] = row.pop(logical)
    row.update(changes)
    return row


def test_column_mapping_reads_renamed_columns() -> None:
    """appointment_columns maps logical fields to the real column names."""
    outcome = run(envelope("c", after=_legacy_row()), config(appointment_columns=LEGACY_COLUMNS))
    assert outcome.keys[1] == "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15"


def test_column_mapping_applies_to_classification() -> None:
    """A status change in the mapped column is a cancellation."""
    cfg = config(appointment_columns=LEGACY_COLUMNS)
    outcome = run(envelope("u", before=_legacy_row(), after=_legacy_row(state="cancelled")), cfg)
    assert [e.type for e in outcome.events] == ["cancelled"]


def test_unmapped_columns_are_not_read() -> None:
    """With starts_at mapped to start_time, a column named starts_at is ignored."""
    outcome = run(envelope("c", after=appointment()), config(appointment_columns={"starts_at": "start_time"}))
    assert (outcome.events, outcome.keys) == ([], [])


def test_unknown_logical_field_in_mapping_is_a_config_error() -> None:
    """A typo in SLOTGUARD_APPOINTMENT_COLUMNS fails fast, naming the setting."""
    with pytest.raises(ConfigError, match="SLOTGUARD_APPOINTMENT_COLUMNS"):
        config(appointment_columns={"start": "start_time"})


def test_unknown_logical_field_in_service_mapping_is_a_config_error() -> None:
    """A typo in SLOTGUARD_SERVICE_COLUMNS fails fast, naming the setting."""
    with pytest.raises(ConfigError, match="SLOTGUARD_SERVICE_COLUMNS"):
        config(service_columns={"event_type": "x"})


def test_reader_reports_mapped_columns() -> None:
    """The resolved mapping is identity for unmapped fields."""
    columns = AppointmentReader({"starts_at": "start_time"}, config().source_zone).columns
    assert columns["starts_at"] == "start_time"
    assert columns["ends_at"] == "ends_at"


def test_string_ids_equal_integer_ids() -> None:
    """company_id "15" and 15 render the same key."""
    as_text = run(envelope("c", after=appointment(company_id="15", branch_id="1", service_id="7")))
    assert as_text.keys == run(envelope("c", after=appointment())).keys


def test_toast_placeholder_takes_the_before_images_value() -> None:
    """An unchanged TOASTed status in the after image is taken from the before image (still occupying)."""
    after = appointment(status=TOAST_PLACEHOLDER, starts_at="2025-10-15T16:00:00Z", ends_at=None)
    outcome = run(envelope("u", before=appointment(), after=after))
    (event,) = outcome.events
    assert event.type == "rescheduled"
    assert event.status == "scheduled"


def test_toast_placeholder_in_an_ignored_column_changes_nothing() -> None:
    """notes = placeholder is an unchanged column: no event, no keys."""
    outcome = run(envelope("u", before=appointment(), after=appointment(notes=TOAST_PLACEHOLDER)))
    assert (outcome.events, outcome.keys, outcome.warnings) == ([], [], ())


def test_toast_placeholder_without_a_before_image_is_unknown() -> None:
    """With no before image a placeholder start is unknown: nothing to key, and a warning says why."""
    outcome = run(envelope("u", after=appointment(starts_at=TOAST_PLACEHOLDER)))
    assert outcome.keys == []
    assert any("TOAST" in w for w in outcome.warnings)


def test_toast_placeholder_status_without_before_counts_as_unknown_status() -> None:
    """A placeholder status with no other image is treated as a null status (occupying)."""
    outcome = run(envelope("u", after=appointment(status=TOAST_PLACEHOLDER)))
    assert len(outcome.keys) == 3
