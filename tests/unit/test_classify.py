"""Every classification rule: which change is booked, rescheduled, cancelled, or nothing."""

from __future__ import annotations

import pytest

from schemas.events import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from tests.support.changes import appointment, config, envelope, run

LATER = {"starts_at": "2025-10-15T16:00:00Z", "ends_at": "2025-10-15T17:00:00Z"}


@pytest.mark.parametrize("status", ["scheduled", "confirmed", "booked", "pending", "Confirmed"])
def test_insert_of_an_occupying_row_is_booked(status: str) -> None:
    """op c with an occupying status (any case) -> AppointmentBooked with the new window."""
    outcome = run(envelope("c", after=appointment(status=status)))
    (event,) = outcome.events
    assert isinstance(event, AppointmentBooked)
    assert event.new_window.starts_at.isoformat() == "2025-10-15T14:00:00+00:00"
    assert (event.appointment_id, event.company_id, event.branch_id, event.event_type_id) == (
        "42",
        "15",
        "1",
        "123",
    )
    assert len(outcome.keys) == 3


@pytest.mark.parametrize("status", ["cancelled", "canceled", "rejected", "no_show", "deleted"])
def test_insert_of_a_non_occupying_row_is_nothing(status: str) -> None:
    """op c of an already cancelled appointment frees and takes nothing."""
    outcome = run(envelope("c", after=appointment(status=status)))
    assert (outcome.events, outcome.keys) == ([], [])


@pytest.mark.parametrize("status", ["cancelled", "no_show", "rejected"])
def test_update_from_non_occupying_to_occupying_is_booked(status: str) -> None:
    """u non-occupying -> occupying (e.g. a cancelled appointment restored) is a booking."""
    outcome = run(envelope("u", before=appointment(status=status), after=appointment(status="confirmed")))
    assert [e.type for e in outcome.events] == ["booked"]
    assert len(outcome.keys) == 3


def test_restoring_a_soft_deleted_row_is_booked() -> None:
    """u deleted_at set -> null on an occupying status is a booking."""
    outcome = run(envelope("u", before=appointment(deleted_at="2025-10-14T12:00:00Z"), after=appointment()))
    assert [e.type for e in outcome.events] == ["booked"]


@pytest.mark.parametrize(
    ("changes", "changed"),
    [
        (LATER, ["starts_at", "ends_at"]),
        ({"ends_at": "2025-10-15T16:30:00Z"}, ["ends_at"]),
        ({"branch_id": 2}, ["branch_id"]),
        ({"service_id": 8}, ["service_id"]),
        ({"company_id": 20, "service_id": 9}, ["company_id", "service_id"]),
    ],
)
def test_update_of_placement_fields_of_an_occupying_row_is_rescheduled(
    changes: dict[str, object], changed: list[str]
) -> None:
    """u occupying -> occupying with start, end, company, branch or service changed -> rescheduled."""
    outcome = run(envelope("u", before=appointment(), after=appointment(**changes)))
    (event,) = outcome.events
    assert isinstance(event, AppointmentRescheduled)
    assert event.changed == changed


def test_reschedule_across_tenants_invalidates_both_tenants_windows() -> None:
    """Moving an appointment to another company keys the old window in the old tenant, the new in the new."""
    outcome = run(
        envelope("u", before=appointment(), after=appointment(company_id=20, branch_id=2, service_id=9))
    )
    (event,) = outcome.events
    assert isinstance(event, AppointmentRescheduled)
    assert (event.old_company_id, event.company_id) == ("15", "20")
    assert {k[:19] for k in outcome.keys} == {"cal_slots_15_1_123_", "cal_slots_20_2_123_"}
    assert len(outcome.keys) == 6


@pytest.mark.parametrize("status", ["cancelled", "canceled", "rejected", "no_show", "deleted"])
def test_update_from_occupying_to_non_occupying_is_cancelled(status: str) -> None:
    """u occupying -> non-occupying -> cancelled with the old window and reason status."""
    outcome = run(envelope("u", before=appointment(), after=appointment(status=status)))
    (event,) = outcome.events
    assert isinstance(event, AppointmentCancelled)
    assert (event.reason, event.status) == ("status", status)
    assert event.old_window.starts_at.hour == 14
    assert len(outcome.keys) == 3


def test_soft_delete_is_cancelled() -> None:
    """u deleted_at null -> set is a cancellation with reason soft_delete."""
    outcome = run(envelope("u", before=appointment(), after=appointment(deleted_at="2025-10-15T09:00:00Z")))
    (event,) = outcome.events
    assert isinstance(event, AppointmentCancelled)
    assert event.reason == "soft_delete"


def test_clearing_the_start_is_cancelled_as_unscheduled() -> None:
    """u of an occupying row to starts_at null frees the old window."""
    outcome = run(envelope("u", before=appointment(), after=appointment(starts_at=None, ends_at=None)))
    (event,) = outcome.events
    assert isinstance(event, AppointmentCancelled)
    assert event.reason == "unscheduled"


def test_delete_of_an_occupying_row_is_cancelled() -> None:
    """op d with a full before image -> cancelled (reason delete) with the old window."""
    outcome = run(envelope("d", before=appointment()))
    (event,) = outcome.events
    assert isinstance(event, AppointmentCancelled)
    assert (event.reason, event.status, event.source.op) == ("delete", "scheduled", "d")
    assert len(outcome.keys) == 3


def test_delete_of_a_cancelled_row_is_nothing() -> None:
    """Deleting an appointment that held no slot frees nothing."""
    assert run(envelope("d", before=appointment(status="cancelled"))).keys == []


def test_delete_with_only_the_primary_key_warns_with_the_fix() -> None:
    """REPLICA IDENTITY DEFAULT deletes carry only the id: no keys, a warning naming ALTER TABLE ... FULL."""
    before = {k: (v if k == "id" else None) for k, v in appointment().items()}
    outcome = run(envelope("d", before=before))
    assert outcome.keys == []
    assert any("ALTER TABLE appointments REPLICA IDENTITY FULL" in w for w in outcome.warnings)


@pytest.mark.parametrize(
    "changes",
    [
        {"notes": "call first"},
        {"updated_at": "2025-10-15T10:00:00Z"},
        {"customer_id": 100},
        {"calcom_booking_id": "cb-2"},
        {"status": "confirmed"},
    ],
)
def test_other_updates_of_an_occupying_row_are_nothing(changes: dict[str, object]) -> None:
    """Notes, timestamps, customer fields, occupying -> occupying status: no event, no keys."""
    outcome = run(envelope("u", before=appointment(), after=appointment(**changes)))
    assert (outcome.events, outcome.keys, outcome.warnings) == ([], [], ())


def test_update_between_non_occupying_states_is_nothing() -> None:
    """cancelled -> no_show frees and takes nothing."""
    outcome = run(
        envelope("u", before=appointment(status="cancelled"), after=appointment(status="no_show", **LATER))
    )
    assert (outcome.events, outcome.keys) == ([], [])


@pytest.mark.parametrize("op", ["r", "t", "m"])
def test_snapshot_reads_truncates_and_messages_are_nothing(op: str) -> None:
    """op r/t/m never yields events or keys."""
    outcome = run(envelope(op, after=appointment() if op == "r" else None))
    assert (outcome.events, outcome.keys, outcome.warnings) == ([], [], ())


@pytest.mark.parametrize("value", [None, b"null", b" null "])
def test_tombstones_are_nothing(value: bytes | None) -> None:
    """A null Kafka value (tombstone after a delete) is recognised, not an error."""
    outcome = run(value)
    assert (outcome.events, outcome.keys, outcome.redis_keys, outcome.warnings) == ([], [], [], ())


def test_update_without_before_image_invalidates_the_new_window_and_names_the_fix() -> None:
    """REPLICA IDENTITY DEFAULT update: keys of the new window, no event, warning with ALTER TABLE."""
    outcome = run(envelope("u", before=None, after=appointment(**LATER)))
    assert outcome.events == []
    assert [k.split("_", 5)[5] for k in outcome.keys] == [
        "2025-10-15-15_2025-10-15-16",
        "2025-10-15-16_2025-10-15-17",
        "2025-10-15-17_2025-10-15-18",
    ]
    assert any("ALTER TABLE appointments REPLICA IDENTITY FULL" in w for w in outcome.warnings)


def test_update_without_before_image_names_the_configured_table() -> None:
    """The fix in the warning names SLOTGUARD_APPOINTMENTS_TABLE."""
    outcome = run(envelope("u", after=appointment()), config(appointments_table="bookings"))
    assert any("ALTER TABLE bookings REPLICA IDENTITY FULL" in w for w in outcome.warnings)


def test_unknown_status_is_treated_as_occupying_with_a_warning() -> None:
    """An unconfigured status books (fail-safe: invalidate) and the warning names both settings."""
    outcome = run(envelope("c", after=appointment(status="tentative")))
    assert [e.type for e in outcome.events] == ["booked"]
    (warning,) = outcome.warnings
    assert "'tentative'" in warning
    assert "SLOTGUARD_OCCUPYING_STATUSES" in warning
    assert "SLOTGUARD_NON_OCCUPYING_STATUSES" in warning


def test_configured_statuses_replace_the_defaults() -> None:
    """With occupying=held and non-occupying=freed, 'held' -> 'freed' is a cancellation."""
    cfg = config(occupying_statuses="held", non_occupying_statuses="freed")
    outcome = run(envelope("u", before=appointment(status="held"), after=appointment(status="freed")), cfg)
    assert [e.type for e in outcome.events] == ["cancelled"]
    assert outcome.warnings == ()


def test_null_status_counts_as_occupying_without_warning() -> None:
    """Tables without a status column: every live row holds its slot."""
    outcome = run(envelope("c", after=appointment(status=None)))
    assert [e.type for e in outcome.events] == ["booked"]
    assert outcome.warnings == ()
