"""Domain events: deterministic ids, JSON form, generated JSON Schemas."""

from __future__ import annotations

from typing import Any

import orjson

from processor.core.decode import decode_envelope
from processor.core.derive import event_id
from schemas.events import AppointmentBooked, parse_booking_event
from schemas.jsonschema import REGENERATE, render_all, stale_files
from tests.support.changes import appointment, encode, envelope, run


def _id(env: dict[str, Any]) -> str:
    return run(env).events[0].event_id


def test_same_change_gets_the_same_event_id() -> None:
    """Redelivering identical bytes yields the same event id."""
    env = envelope("c", after=appointment())
    assert _id(env) == _id(env)


def test_reemitted_change_with_new_processing_time_keeps_its_id() -> None:
    """Debezium re-emitting after a restart (new envelope ts_ms, same LSN) yields the same id."""
    first, again = envelope("c", after=appointment()), envelope("c", after=appointment())
    again["ts_ms"] += 60_000
    assert _id(first) == _id(again)


def test_different_lsn_or_type_gets_a_different_id() -> None:
    """Another WAL position, or another event type of the same row, is another event."""
    base = envelope("c", after=appointment())
    assert _id(base) != _id(envelope("c", after=appointment(), lsn=23457))
    assert _id(base) != _id(envelope("d", before=appointment()))


def test_without_lsn_the_envelope_identity_decides() -> None:
    """No LSN: same identity -> same id; another source ts_ms or row image -> another id."""
    base = envelope("c", after=appointment(), lsn=None)
    assert _id(base) == _id(envelope("c", after=appointment(), lsn=None))
    later = envelope("c", after=appointment(), lsn=None)
    later["source"]["ts_ms"] += 1
    assert _id(base) != _id(later)
    assert _id(base) != _id(envelope("c", after=appointment(notes="other"), lsn=None))


def test_event_id_ignores_json_key_order() -> None:
    """Images are hashed canonically, so key order in the message does not matter."""
    env = envelope("c", after=appointment(), lsn=None)
    reordered = dict(env, after=dict(reversed(list(appointment().items()))))
    a, b = decode_envelope(encode(env)), decode_envelope(encode(reordered))
    assert a is not None
    assert b is not None
    assert event_id(a.envelope, "42", "booked") == event_id(b.envelope, "42", "booked")


def test_event_json_round_trips_and_uses_txid_alias() -> None:
    """to_json() bytes parse back into the same event; the source block says txId as Debezium does."""
    event = run(envelope("u", before=appointment(), after=appointment(status="cancelled"))).events[0]
    data = orjson.loads(event.to_json())
    assert data["type"] == "cancelled"
    assert data["source"]["txId"] == 789
    assert data["source"]["lsn"] == 23456
    assert data["old_window"]["starts_at"] == "2025-10-15T14:00:00+00:00"
    assert parse_booking_event(event.to_json()) == event
    assert parse_booking_event(data) == event


def test_booked_event_carries_tenant_and_window() -> None:
    """AppointmentBooked has appointment, company, branch, service, event type and the new window."""
    event = run(envelope("c", after=appointment())).events[0]
    assert isinstance(event, AppointmentBooked)
    assert (event.appointment_id, event.company_id, event.branch_id, event.service_id) == (
        "42",
        "15",
        "1",
        "7",
    )
    assert event.event_type_id == "123"
    assert event.new_window.ends_at is not None


def test_generated_json_schemas_are_up_to_date() -> None:
    """schemas/json/*.json match the models; regenerate with the command in the message."""
    stale = stale_files()
    assert not stale, f"stale JSON Schemas {stale}; regenerate with: {REGENERATE}"


def test_booking_event_schema_is_a_discriminated_union() -> None:
    """booking_event.json dispatches on 'type' to the three events."""
    schema = orjson.loads(render_all()["booking_event.json"])
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == {"booked", "rescheduled", "cancelled"}
