"""Step one of the core: read a change -- decode, read both row images, classify -- exactly once.

:func:`read_change` does everything that needs only the message and the configuration. What it returns
(:class:`ReadChange`) says which service rows the next step will look up (:attr:`ReadChange.service_ids`),
so the worker can fetch what its resolver lacks for a whole batch before anything is derived
(:mod:`processor.core.derive`).
"""

from __future__ import annotations

import msgspec
from msgspec.structs import astuple

from processor.core.classify import REPLICA_IDENTITY_FIX, Classification, Kind, classify
from processor.core.config import CoreConfig
from processor.core.decode import (
    DecodedEnvelope,
    Envelope,
    decode_envelope,
    may_repeat_keys,
    reject_duplicate_keys,
)
from processor.core.errors import MalformedChange
from schemas.rows import AppointmentRow, RowError


class ReadChange(msgspec.Struct, frozen=True, gc=False):
    """One change, read: its op and commit time, and -- when it touches a slot -- its classification.

    ``classification`` is ``None`` for tombstones, snapshot reads, truncates, messages and updates that
    leave every column the core reads unchanged: nothing to derive.
    """

    op: str | None
    source_ts_ms: int | None
    envelope: Envelope | None = None
    classification: Classification | None = None

    @property
    def keyed_rows(self) -> tuple[AppointmentRow, ...]:
        """The row images whose slot windows are invalidated: the old one (freed), the new one (taken)."""
        cls = self.classification
        if cls is None or cls.kind is Kind.NOTHING:
            return ()
        rows: list[AppointmentRow] = []
        if cls.kind in (Kind.CANCELLED, Kind.RESCHEDULED) and cls.before is not None:
            rows.append(cls.before)
        if cls.kind in (Kind.BOOKED, Kind.RESCHEDULED, Kind.TOUCHED) and cls.after is not None:
            rows.append(cls.after)
        return tuple(rows)

    @property
    def service_ids(self) -> frozenset[str]:
        """Services whose event types the derive step looks up."""
        return frozenset(row.service_id for row in self.keyed_rows if row.service_id is not None)


def _rows(
    decoded: DecodedEnvelope, config: CoreConfig
) -> tuple[AppointmentRow | None, AppointmentRow | None]:
    env = decoded.envelope
    reader = config.appointments
    try:
        if decoded.typed:  # row structs of the mapped columns, in APPOINTMENT_FIELDS' order
            read_values = reader.read_values
            before = read_values(astuple(env.before), decoded.semantics) if env.before is not None else None
            after = read_values(astuple(env.after), decoded.semantics) if env.after is not None else None
        else:
            before = reader.read(env.before, decoded.semantics) if env.before is not None else None
            after = reader.read(env.after, decoded.semantics) if env.after is not None else None
    except RowError as exc:
        raise MalformedChange(f"{config.appointments_table} row: {exc}") from None
    # Unchanged TOASTed columns arrive as a placeholder: take them from the other image.
    if after is not None and after.unavailable:
        after = after.fill_unavailable(before)
    if before is not None and before.unavailable:
        before = before.fill_unavailable(after)
    return before, after


def read_change(value: bytes | str | None, config: CoreConfig) -> ReadChange:
    """Read one Kafka message value of the appointments topic (``None`` = tombstone).

    Raises :class:`~processor.core.errors.MalformedChange` (an :class:`~schemas.errors.InputError`)."""
    decoded = decode_envelope(value, config.typed)
    if decoded is None:
        return ReadChange(op=None, source_ts_ms=None)
    env = decoded.envelope
    ts_ms = env.source.ts_ms if env.source is not None and env.source.ts_ms is not None else env.ts_ms
    if env.op not in ("c", "u", "d"):
        return ReadChange(env.op, ts_ms)
    # Debezium always writes the image an op is about (a delete's before: at least the key columns).
    missing = "before" if env.op == "d" and env.before is None else None
    if env.op != "d" and env.after is None:
        missing = "after"
    if missing == "before":
        fix = REPLICA_IDENTITY_FIX.format(table=config.appointments_table)
        raise MalformedChange(f"a delete without its before image (REPLICA IDENTITY NOTHING?); fix: {fix}")
    if missing is not None:
        raise MalformedChange(f"op {env.op!r} without its after image")
    images = (env.before is not None) + (env.after is not None)
    if may_repeat_keys(value, config.appointments.tokens, images) if value is not None else False:
        reject_duplicate_keys(value)  # type: ignore[arg-type]
    if (
        env.op == "u"
        and env.before is not None
        and env.after is not None
        and (
            env.before == env.after if decoded.typed else config.appointments.unchanged(env.before, env.after)
        )
    ):
        # The common update (notes, updated_at, customer...) leaves every column we read alone: nothing.
        return ReadChange(env.op, ts_ms)
    before, after = _rows(decoded, config)
    cls = classify(env.op, before, after, config.statuses, config.appointments_table)
    return ReadChange(env.op, ts_ms, env, cls)
