"""What the core makes of one change: the events to publish (as bytes) and the cache keys to delete.

Events are carried as :class:`EventRecord` -- type, Kafka key and the JSON published to the events topic
-- because that is all the worker needs, and building a validated model per event cost more than the rest
of the change. :attr:`Outcome.events` parses them back into the typed models for callers that want them
(``slotguard explain``, tests); the fast and the reference path produce byte-identical records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec

from schemas.events import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    parse_booking_event,
)

_BLAKE2B_16 = hashlib.blake2b(digest_size=16)


def lsn_event_id(
    db: str | None, lsn: int | None, tx_id: int | None, appointment_id: str | None, kind: str
) -> str:
    """The event id of a change with an LSN: hash of database, LSN, txId, appointment id and event type
    (:func:`processor.core.derive.event_id` says how a change without one is identified)."""
    hasher = _BLAKE2B_16.copy()  # a copy of a fresh hasher costs less than making one with its parameters
    hasher.update(f"{db}|{lsn}|{tx_id}|{appointment_id}|{kind}".encode())
    return hasher.hexdigest()


def source_position(
    lsn: int | None, tx_id: int | None, ts_ms: int | None, db: str | None, table: str | None, op: str
) -> dict[str, object]:
    """An event's ``source`` block, in the field order of :class:`schemas.events.SourcePosition`."""
    return {"lsn": lsn, "txId": tx_id, "ts_ms": ts_ms, "db": db, "table": table, "op": op}


class EventRecord(msgspec.Struct, gc=False):
    """One booking event as published: ``type`` (booked, rescheduled, cancelled), ``key`` (the appointment
    id) and ``value`` (the event's JSON, as ``BookingEvent.to_json`` writes it).

    The value is given, or made on first access by ``make(*args)``: the fast path defers the event id and
    the JSON to the moment the worker publishes them. A struct, not a class with ``__init__``: the core
    makes one per event, and a Python ``__init__`` frame cost more than the rest of the record
    (callgrind). Not tracked by the cycle collector: nothing it holds refers back to it."""

    type: str
    key: bytes
    _value: bytes | None = None
    _make: Callable[..., bytes] | None = None
    _args: tuple[object, ...] = ()

    @property
    def value(self) -> bytes:
        value = self._value
        if value is None:
            if self._make is None:
                raise ValueError("an EventRecord needs a value or a way to make it")
            # The maker and its arguments stay: a struct's attribute store costs ~700 instructions.
            value = self._value = self._make(*self._args)
        return value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventRecord):
            return NotImplemented
        return (self.type, self.key, self.value) == (other.type, other.key, other.value)

    def __hash__(self) -> int:
        return hash((self.type, self.key, self.value))

    def __repr__(self) -> str:
        return f"EventRecord({self.type!r}, {self.key!r}, {self.value!r})"


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
