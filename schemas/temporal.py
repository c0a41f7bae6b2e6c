"""Decoding the time values Debezium's Postgres connector emits, and the TOAST placeholder.

Forms (``time.precision.mode=adaptive``/``adaptive_time_microseconds``/``connect``/``isostring``):

==========================================  =====================  =======================================
column type                                 JSON value             Connect semantic name (schema enabled)
==========================================  =====================  =======================================
``timestamptz``                             ISO string with offset ``io.debezium.time.ZonedTimestamp``
``timestamp`` precision 0-3                 epoch milliseconds     ``io.debezium.time.Timestamp``
``timestamp`` precision 4-6 (default)       epoch microseconds     ``io.debezium.time.MicroTimestamp``
``timestamp`` (nanosecond sources)          epoch nanoseconds      ``io.debezium.time.NanoTimestamp``
``timestamp``, ``time.precision.mode=connect``  epoch milliseconds ``org.apache.kafka.connect.data.Timestamp``
``timestamp``, ``time.precision.mode=isostring`` ISO string, no offset ``io.debezium.time.IsoTimestamp``
==========================================  =====================  =======================================

``timestamp without time zone`` values are wall-clock times that Debezium encodes *as if* they were UTC;
:func:`decode_instant` reads them back as wall-clock times in the configured source zone
(``SLOTGUARD_SOURCE_TIMEZONE``). A wall-clock time that is ambiguous or skipped in that zone (DST) is
taken with ``fold=0``, i.e. the earlier offset.

Bare payloads (``schemas.enable=false``) carry no semantic name, so the unit of an epoch integer is
inferred from its magnitude (:func:`infer_epoch_unit`): ``|v| < 10**14`` milliseconds, ``< 10**17``
microseconds, otherwise nanoseconds. That is unambiguous for every instant between 1973-03-03 and
5138-11-16 UTC; outside it an epoch in micro-/nanoseconds would be misread (use ``schemas.enable=true``).

Unchanged TOASTed columns (only possible with ``REPLICA IDENTITY`` other than ``FULL``) arrive as the
placeholder string :data:`TOAST_PLACEHOLDER`; :func:`is_unavailable` recognises it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

#: Debezium's default ``unavailable.value.placeholder``.
TOAST_PLACEHOLDER: Final = "__debezium_unavailable_value"

ZONED_TIMESTAMP: Final = "io.debezium.time.ZonedTimestamp"
ISO_TIMESTAMP: Final = "io.debezium.time.IsoTimestamp"
MILLI_TIMESTAMP: Final = "io.debezium.time.Timestamp"
MICRO_TIMESTAMP: Final = "io.debezium.time.MicroTimestamp"
NANO_TIMESTAMP: Final = "io.debezium.time.NanoTimestamp"
CONNECT_TIMESTAMP: Final = "org.apache.kafka.connect.data.Timestamp"

MILLIS: Final = "ms"
MICROS: Final = "us"
NANOS: Final = "ns"

#: Connect semantic name -> unit of its epoch integer.
EPOCH_UNITS: Final[dict[str, str]] = {
    MILLI_TIMESTAMP: MILLIS,
    CONNECT_TIMESTAMP: MILLIS,
    MICRO_TIMESTAMP: MICROS,
    NANO_TIMESTAMP: NANOS,
}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)
_MILLIS_BELOW: Final = 10**14
_MICROS_BELOW: Final = 10**17


class TemporalError(ValueError):
    """A value that should be a Debezium timestamp is not one (the message names the value's form)."""


def is_unavailable(value: object) -> bool:
    """True for the TOAST placeholder: the column did not change and its value was not sent."""
    return value == TOAST_PLACEHOLDER


def infer_epoch_unit(value: int) -> str:
    """Unit of a bare epoch integer, by magnitude (see the module docstring for the valid range)."""
    magnitude = -value if value < 0 else value
    if magnitude < _MILLIS_BELOW:
        return MILLIS
    if magnitude < _MICROS_BELOW:
        return MICROS
    return NANOS


def epoch_to_micros(value: int, unit: str) -> int:
    if unit == MICROS:
        return value
    if unit == MILLIS:
        return value * 1000
    return value // 1000


def _wall_clock(naive: datetime, zone: tzinfo) -> datetime:
    # A wall-clock time in ``zone`` -> the UTC instant; UTC itself skips the zone arithmetic.
    if zone is UTC:
        return naive.replace(tzinfo=UTC)
    return naive.replace(tzinfo=zone).astimezone(UTC)


def decode_instant(value: object, semantic: str | None, naive_zone: tzinfo) -> datetime | None:
    """Decode a Debezium timestamp to an aware UTC ``datetime`` (``None`` stays ``None``).

    ``semantic`` is the column's Connect semantic name when the envelope carried a schema, else ``None``.
    ``naive_zone`` is the zone of ``timestamp without time zone`` columns. Raises :class:`TemporalError`.
    The TOAST placeholder must be handled by the caller (it is not a time).
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise TemporalError(f"not an ISO-8601 timestamp: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            return _wall_clock(parsed, naive_zone)
        return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        unit = EPOCH_UNITS.get(semantic) if semantic is not None else None
        micros = epoch_to_micros(value, unit or infer_epoch_unit(value))
        try:
            return _wall_clock(_NAIVE_EPOCH + timedelta(microseconds=micros), naive_zone)
        except OverflowError:
            raise TemporalError(f"epoch value out of range: {value}") from None
    raise TemporalError(f"expected an ISO string or epoch integer, got {type(value).__name__}")


def to_epoch_micros(instant: datetime) -> int:
    """Microseconds since the epoch of an aware ``datetime``."""
    return (instant - _EPOCH) // timedelta(microseconds=1)
