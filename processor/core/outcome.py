"""What the core makes of one change: the events to publish (as bytes) and the cache keys to delete.

Events are carried as :class:`EventRecord` -- type, Kafka key and the JSON published to the events topic
-- because that is all the worker needs. :attr:`Outcome.events` parses them back into the typed models for
callers that want them (``slotguard explain``, tests).
"""

from __future__ import annotations

import msgspec

from schemas.events import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    parse_booking_event,
)


class EventRecord(msgspec.Struct, frozen=True, gc=False):
    """One booking event as published: ``type`` (booked, rescheduled, cancelled), ``key`` (the appointment
    id) and ``value`` (the event's JSON, as ``BookingEvent.to_json`` writes it). Not tracked by the cycle
    collector: nothing it holds refers back to it."""

    type: str
    key: bytes
    value: bytes


class Outcome(msgspec.Struct, gc=False):
    """What one change yields. ``keys`` are sorted and unique; ``redis_keys`` are them with the prefix.

    A struct for the same reason as :class:`EventRecord` (one per change, made in C). ``records`` and
    ``warnings`` are tuples, empty by default: the worker keeps a batch's outcomes until the batch is
    published, and every list it keeps is walked by each young collection of the cycle collector and
    moved to an older generation, while a tuple of untracked members (these) is dropped from the
    collector's lists at the first collection, and the empty tuple is one shared object.
    (``docs/worker.md``: the tracked objects a batch keeps and what they cost a drain.)"""

    records: tuple[EventRecord, ...] = ()
    keys: list[str] = msgspec.field(default_factory=list)
    redis_keys: list[str] = msgspec.field(default_factory=list)
    warnings: tuple[str, ...] = ()
    #: How many of the change's windows (old, new) had no resolvable event type -- for metrics, so
    #: callers need not parse warning text.
    unresolved_event_types: int = 0
    #: The change's Debezium op (``None`` for a tombstone) and commit time (``source.ts_ms``, else the
    #: envelope's ``ts_ms``), so the worker can label metrics without decoding the record a second time.
    op: str | None = None
    source_ts_ms: int | None = None

    @property
    def events(self) -> list[AppointmentBooked | AppointmentRescheduled | AppointmentCancelled]:
        """The records parsed into the typed event models (validated against the event schema)."""
        return [parse_booking_event(record.value) for record in self.records]
