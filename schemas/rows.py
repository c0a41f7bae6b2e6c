"""Appointment and service rows, read from a Debezium row image through a configurable column mapping.

The reference schema (``schemas/sql``) names the columns ``appointments(id, company_id, branch_id,
service_id, starts_at, ends_at, status, deleted_at, ...)`` and ``services(id, company_id, branch_id,
calcom_event_type_id, ...)``. Deployments whose columns are named differently set
``SLOTGUARD_APPOINTMENT_COLUMNS`` / ``SLOTGUARD_SERVICE_COLUMNS`` (logical field -> real column).

Rows are frozen msgspec structs (made in C) rather than pydantic models: they are built once or twice per change
on the hot path, from values the typed decoders below have already checked, so a second validation pass
would only cost time. Ids are normalised to strings (``15`` and ``"15"`` are the same tenant); statuses
to lower case.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any, Final

import msgspec
import msgspec.structs

from schemas.temporal import TOAST_PLACEHOLDER, TemporalError, decode_instant

#: Logical appointment fields the core reads.
APPOINTMENT_FIELDS: Final = (
    "id",
    "company_id",
    "branch_id",
    "service_id",
    "starts_at",
    "ends_at",
    "status",
    "deleted_at",
)
#: Logical service fields the core reads.
SERVICE_FIELDS: Final = ("id", "company_id", "branch_id", "calcom_event_type_id")

_NOTHING_UNAVAILABLE: Final[frozenset[str]] = frozenset()
#: Longest id (any id column) and status read: both end up in keys or events, and a megabyte id would make
#: an event Kafka refuses. A UUID is 36 characters; statuses are words.
MAX_ID_CHARS: Final = 128
MAX_STATUS_CHARS: Final = 64
#: The integers JSON decoders agree on (orjson's range: signed and unsigned 64-bit); beyond, an id is malformed.
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**64 - 1


class RowError(ValueError):
    """A column holds a value of the wrong kind (the message names the logical field)."""


class ColumnMappingError(ValueError):
    """A column mapping names a logical field that does not exist."""


def resolve_columns(fields: tuple[str, ...], mapping: Mapping[str, str]) -> dict[str, str]:
    """Logical field -> real column for every field in ``fields`` (identity unless mapped)."""
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ColumnMappingError(f"unknown logical field(s) {unknown}; known: {list(fields)}")
    return {field: mapping.get(field, field) for field in fields}


def decode_id(field: str, value: object) -> str | None:
    """An id column: integer or string -> string; ``None`` stays ``None``."""
    if value is None:
        return value
    if isinstance(value, str):
        if len(value) > MAX_ID_CHARS:
            raise RowError(f"{field}: an id of {len(value)} characters (at most {MAX_ID_CHARS})")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not MIN_INT <= value <= MAX_INT:
            raise RowError(f"{field}: an integer id beyond 64 bits")
        return str(value)
    raise RowError(f"{field}: expected an integer or string id, got {type(value).__name__}")


def column_tokens(columns: Iterable[str]) -> tuple[bytes, ...]:
    """Column names as a JSON writer writes them (``b'"company_id"'``), to count them in a raw value."""
    return tuple(json.dumps(column, ensure_ascii=False).encode() for column in columns)


class AppointmentRow(msgspec.Struct, frozen=True, gc=False):
    """One image of an appointment row. ``unavailable`` names fields that held the TOAST placeholder
    (their value here is ``None``); :meth:`fill_unavailable` takes them from the other image."""

    id: str | None
    company_id: str | None
    branch_id: str | None
    service_id: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    status: str | None
    deleted_at: datetime | None
    unavailable: frozenset[str] = _NOTHING_UNAVAILABLE

    def fill_unavailable(self, other: AppointmentRow | None) -> AppointmentRow:
        """This image with unavailable fields taken from ``other`` where ``other`` has them."""
        if not self.unavailable or other is None:
            return self
        updates = {f: getattr(other, f) for f in self.unavailable if f not in other.unavailable}
        return msgspec.structs.replace(self, unavailable=self.unavailable - updates.keys(), **updates)


class ServiceRow(msgspec.Struct, frozen=True, gc=False):
    """One image of a service row."""

    id: str | None
    company_id: str | None
    branch_id: str | None
    calcom_event_type_id: str | None


class AppointmentReader:
    """Reads :class:`AppointmentRow` from a row image; built once per configuration."""

    __slots__ = ("_all_columns", "_columns", "_id_columns", "_status", "_time_columns", "_zone", "tokens")

    def __init__(self, mapping: Mapping[str, str], naive_zone: tzinfo) -> None:
        self._columns = resolve_columns(APPOINTMENT_FIELDS, mapping)
        self._zone = naive_zone
        c = self._columns
        self._id_columns = tuple((f, c[f]) for f in ("id", "company_id", "branch_id", "service_id"))
        self._time_columns = tuple((f, c[f]) for f in ("starts_at", "ends_at", "deleted_at"))
        self._status = c["status"]
        self._all_columns = tuple(c.values())
        #: The id columns as JSON strings (``b'"company_id"'``): the core's duplicate-key check counts them.
        self.tokens = column_tokens(column for _field, column in self._id_columns)

    @property
    def columns(self) -> dict[str, str]:
        return dict(self._columns)

    def read(self, image: Mapping[str, Any], semantics: Mapping[str, str]) -> AppointmentRow:
        """Decode one image; ``semantics`` maps columns to Connect semantic names (empty for bare payloads).

        Raises :class:`RowError` naming the logical field on a value of the wrong kind."""
        get = image.get
        return self.read_values([get(column) for column in self._all_columns], semantics)

    def read_values(self, values: Sequence[Any], semantics: Mapping[str, str]) -> AppointmentRow:
        """:meth:`read` of an image given as its mapped columns' raw values, in :data:`APPOINTMENT_FIELDS`'
        order (the typed decoder's row structs hold them so)."""
        unavailable: list[str] | None = None
        ids: list[str | None] = []
        for (field, _column), raw in zip(self._id_columns, values[:4], strict=True):
            if type(raw) is int and MIN_INT <= raw <= MAX_INT:  # the usual bigint id
                ids.append(str(raw))
            elif raw is None or (type(raw) is str and len(raw) <= MAX_ID_CHARS):
                if raw == TOAST_PLACEHOLDER:
                    unavailable = [*(unavailable or ()), field]
                    raw = None
                ids.append(raw)
            else:
                ids.append(decode_id(field, raw))
        times: list[datetime | None] = []
        zone = self._zone
        for (field, column), raw in zip(self._time_columns, (values[4], values[5], values[7]), strict=True):
            if raw is None:
                times.append(None)
            elif raw == TOAST_PLACEHOLDER:
                unavailable = [*(unavailable or ()), field]
                times.append(None)
            else:
                try:
                    times.append(decode_instant(raw, semantics.get(column) if semantics else None, zone))
                except TemporalError as exc:
                    raise RowError(f"{field}: {exc}") from None
        status = values[6]
        if status is not None:
            if type(status) is not str:
                raise RowError(f"status: expected a string, got {type(status).__name__}")
            if len(status) > MAX_STATUS_CHARS:
                raise RowError(f"status: {len(status)} characters (at most {MAX_STATUS_CHARS})")
            if status == TOAST_PLACEHOLDER:
                unavailable = [*(unavailable or ()), "status"]
                status = None
            else:
                status = status.strip().lower()
        return AppointmentRow(
            ids[0],
            ids[1],
            ids[2],
            ids[3],
            times[0],
            times[1],
            status,
            times[2],
            frozenset(unavailable) if unavailable else _NOTHING_UNAVAILABLE,
        )

    def unchanged(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
        """True when every mapped column holds the same raw value in both images (no decoding needed)."""
        b, a = before.get, after.get
        # A plain loop, not all() over a generator: that costs more than the comparisons themselves, and
        # this runs for every update (most leave the mapped columns alone).
        for column in self._all_columns:  # noqa: SIM110
            if b(column) != a(column):
                return False
        return True


class ServiceReader:
    """Reads :class:`ServiceRow` from a row image; built once per configuration."""

    __slots__ = ("_columns",)

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._columns = resolve_columns(SERVICE_FIELDS, mapping)

    @property
    def columns(self) -> dict[str, str]:
        return dict(self._columns)

    def read(self, image: Mapping[str, Any]) -> ServiceRow:
        c = self._columns
        values = []
        for field in SERVICE_FIELDS:
            raw = image.get(c[field])
            values.append(None if raw == TOAST_PLACEHOLDER else decode_id(field, raw))
        return ServiceRow(values[0], values[1], values[2], values[3])
