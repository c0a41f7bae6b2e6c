"""Domain events derived from appointment changes, named as in the seed design.

Each event carries the appointment, its tenant (company, branch), service and Cal.com event type, the
window(s) it occupied or occupies, and the Debezium source position it came from. ``event_id`` is
deterministic (see :func:`processor.core.derive.event_id`): the same change always yields the same id, so
consumers of ``slotguard.appointment-events`` can deduplicate redeliveries.

The JSON Schemas in ``schemas/json/`` are generated from these models (``python -m schemas.jsonschema``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_json(self) -> bytes:
        """Compact JSON (aliases, UTC ISO-8601 instants) -- the bytes published to the events topic."""
        return orjson.dumps(self.model_dump(by_alias=True))


class Window(_Model):
    """The time an appointment holds: ``[starts_at, ends_at)``; ``ends_at`` is null when the row has none."""

    starts_at: datetime
    ends_at: datetime | None = None


class SourcePosition(_Model):
    """Where the change came from in the Postgres WAL (Debezium ``source`` block)."""

    lsn: int | None = Field(default=None, description="Log sequence number of the change.")
    tx_id: int | None = Field(default=None, alias="txId", description="Postgres transaction id.")
    ts_ms: int | None = Field(default=None, description="Commit time in the database, epoch milliseconds.")
    db: str | None = None
    table: str | None = None
    op: Literal["c", "u", "d"] = Field(description="Debezium operation the event was derived from.")


class _BookingEvent(_Model):
    type: str = Field(description="Discriminator: booked, rescheduled or cancelled.")
    event_id: str = Field(description="Deterministic id: the same change always yields the same id.")
    appointment_id: str
    company_id: str | None = Field(description="Tenant the event concerns (the new one for a reschedule).")
    branch_id: str | None
    service_id: str | None
    event_type_id: str | None = Field(description="Cal.com event type; null when it could not be resolved.")
    status: str | None = Field(description="Appointment status after the change (before it, for a delete).")
    source: SourcePosition


class AppointmentBooked(_BookingEvent):
    """An appointment now holds a slot it did not hold before (insert, or update into an occupying state)."""

    type: Literal["booked"] = "booked"
    new_window: Window


class AppointmentRescheduled(_BookingEvent):
    """An appointment that holds a slot moved: its window, tenant or service changed."""

    type: Literal["rescheduled"] = "rescheduled"
    old_company_id: str | None
    old_branch_id: str | None
    old_service_id: str | None
    old_event_type_id: str | None
    old_window: Window
    new_window: Window
    changed: list[str] = Field(
        description="Logical fields that changed (starts_at, ends_at, company_id, ...)."
    )


class AppointmentCancelled(_BookingEvent):
    """An appointment no longer holds its slot: status left the occupying set, soft delete, or row delete."""

    type: Literal["cancelled"] = "cancelled"
    reason: Literal["status", "soft_delete", "delete", "unscheduled"] = Field(
        description="status: left the occupying statuses; soft_delete: deleted_at set; delete: row deleted; "
        "unscheduled: starts_at cleared."
    )
    old_window: Window


BookingEvent = Annotated[
    AppointmentBooked | AppointmentRescheduled | AppointmentCancelled, Field(discriminator="type")
]

#: Parses any booking event from its JSON (e.g. in consumers and tests).
booking_event_adapter: TypeAdapter[AppointmentBooked | AppointmentRescheduled | AppointmentCancelled] = (
    TypeAdapter(BookingEvent)
)


def parse_booking_event(
    data: bytes | str | dict[str, Any],
) -> AppointmentBooked | AppointmentRescheduled | AppointmentCancelled:
    """Parse one booking event from JSON bytes/str or an already decoded dict."""
    if isinstance(data, dict):
        return booking_event_adapter.validate_python(data)
    return booking_event_adapter.validate_json(data)
