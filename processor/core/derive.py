"""Step two of the core: derive -- resolve event types, build the booking event, render the keys.

:func:`derive` is pure and synchronous: it asks the given resolver (in-memory lookups only) for event
types, so the worker first fetches what its resolver lacks (:attr:`~processor.core.read.ReadChange.service_ids`,
then :func:`companies_needed`) and derives each change once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson

from processor.core.classify import Classification, Kind
from processor.core.config import CoreConfig
from processor.core.decode import Envelope
from processor.core.outcome import EventRecord, Outcome
from processor.core.read import ReadChange, read_change
from processor.core.resolver import EventTypeResolver
from processor.core.window import MAX_BUCKETS
from schemas.events import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    BookingEvent,
)
from schemas.rows import AppointmentRow

# --- event ids --------------------------------------------------------------------------------------


_BLAKE2B_16 = hashlib.blake2b(digest_size=16)


def lsn_event_id(
    db: str | None, lsn: int | None, tx_id: int | None, appointment_id: str | None, kind: str
) -> str:
    """The event id of a change with an LSN: hash of database, LSN, txId, appointment id and event type
    (:func:`event_id` says how a change without one is identified)."""
    hasher = _BLAKE2B_16.copy()  # a copy of a fresh hasher costs less than making one with its parameters
    hasher.update(f"{db}|{lsn}|{tx_id}|{appointment_id}|{kind}".encode())
    return hasher.hexdigest()


def event_id(env: Envelope, appointment_id: str, kind: str) -> str:
    """Deterministic event id: the same change (same WAL position, or same identity) -> the same id.

    With an LSN: hash of database, LSN, txId, appointment id and event type. Without one (not a Postgres
    source, or a synthetic event): hash of the envelope's identity -- connector name, database, schema,
    table, source ts_ms, txId, op and both row images (canonical JSON) -- plus appointment id and type.
    The envelope's own ``ts_ms`` (when Debezium processed the change) is left out: it differs on re-emission.
    """
    src = env.source
    if src is not None and src.lsn is not None:
        return lsn_event_id(src.db, src.lsn, src.tx_id, appointment_id, kind)
    images = orjson.dumps([env.before, env.after], option=orjson.OPT_SORT_KEYS)
    head = (
        f"{src.name}|{src.db}|{src.schema_}|{src.table}|{src.ts_ms}|{src.tx_id}" if src is not None else "-"
    )
    identity = f"{head}|{env.op}|{appointment_id}|{kind}|".encode() + images
    return hashlib.blake2b(identity, digest_size=16).hexdigest()


def _position(env: Envelope) -> dict[str, object]:
    src = env.source
    if src is None:
        return {"op": env.op}
    return {
        "lsn": src.lsn,
        "txId": src.tx_id,
        "ts_ms": src.ts_ms,
        "db": src.db,
        "table": src.table,
        "op": env.op,
    }


def _window(row: AppointmentRow) -> dict[str, object]:
    return {"starts_at": row.starts_at, "ends_at": row.ends_at}


# --- event-type resolution and keys -----------------------------------------------------------------


def companies_needed(read: ReadChange, config: CoreConfig, resolver: EventTypeResolver) -> frozenset[str]:
    """Companies whose event types :func:`derive` will ask for: rows whose service gives no event type,
    under the ``company`` policy. Call it after the services are known (it asks ``resolver``)."""
    if config.unknown_event_type != "company":
        return frozenset()
    needed: set[str] = set()
    for row in read.keyed_rows:
        if row.company_id is None or row.starts_at is None:
            continue
        info = resolver.service(row.service_id) if row.service_id is not None else None
        if info is None or info.event_type_id is None:
            needed.add(row.company_id)
    return frozenset(needed)


def _event_type(row: AppointmentRow, resolver: EventTypeResolver, warnings: list[str]) -> str | None:
    if row.service_id is None:
        return None
    info = resolver.service(row.service_id)
    if info is None:
        return None
    if info.company_id is not None and row.company_id is not None and info.company_id != row.company_id:
        warnings.append(
            f"service {row.service_id} belongs to company {info.company_id}, appointment {row.id} to "
            f"{row.company_id}; keys stay in company {row.company_id}"
        )
    return info.event_type_id


def _keys_for(
    row: AppointmentRow,
    event_type: str | None,
    config: CoreConfig,
    resolver: EventTypeResolver,
    keys: set[str],
    warnings: list[str],
) -> None:
    """Add the keys of ``row``'s window (in its own tenant) to ``keys``."""
    if row.starts_at is None:
        if "starts_at" in row.unavailable:
            warnings.append(f"appointment {row.id}: start not sent (TOAST placeholder); nothing invalidated")
        return
    if row.company_id is None:
        warnings.append(f"appointment {row.id} has no company; no keys invalidated")
        return
    guard = config.guard
    company = guard.check("company_id", row.company_id)
    branch = guard.check("branch_id", row.branch_id) if row.branch_id else None
    if event_type is not None:
        event_types: Sequence[str] = (guard.check("event_type_id", event_type),)
    else:
        what = f"service {row.service_id}" if row.service_id is not None else "no service"
        if config.unknown_event_type == "skip":
            warnings.append(
                f"no event type for appointment {row.id} ({what}); no keys invalidated (policy: skip)"
            )
            return
        known = resolver.event_types_of_company(company)
        if not known:
            warnings.append(
                f"no event type for appointment {row.id} ({what}) and the event types of company {company} "
                "are unknown; no keys invalidated"
            )
            return
        event_types = [guard.check("event_type_id", et) for et in known]
        warnings.append(
            f"no event type for appointment {row.id} ({what}); invalidating all {len(event_types)} "
            f"event type(s) of company {company}"
        )
    buckets, truncated = config.window.buckets(row.starts_at, row.ends_at)
    if truncated:
        warnings.append(
            f"appointment {row.id} spans more than {MAX_BUCKETS} hours; only the first are invalidated"
        )
    render = config.template.render
    for et in event_types:
        keys.update(render(company, branch, et, buckets))


# --- events ---------------------------------------------------------------------------------------


# The event models' validators, called directly: ``model_validate``'s keyword handling alone costs a
# fifth of validating an event. Same validation, same result.
_validate_booked = AppointmentBooked.__pydantic_validator__.validate_python
_validate_rescheduled = AppointmentRescheduled.__pydantic_validator__.validate_python
_validate_cancelled = AppointmentCancelled.__pydantic_validator__.validate_python


def _build_event(
    cls: Classification, env: Envelope, event_types: dict[str, str | None]
) -> BookingEvent | None:
    # Each event is validated from one plain dict in a single pydantic-core call: about half the cost of
    # building the nested SourcePosition/Window models one by one.
    if cls.kind is Kind.BOOKED or cls.kind is Kind.RESCHEDULED:
        new = cls.after
        if new is None or new.id is None:
            return None
        data: dict[str, object] = {
            "event_id": event_id(env, new.id, cls.kind.value),
            "appointment_id": new.id,
            "company_id": new.company_id,
            "branch_id": new.branch_id,
            "service_id": new.service_id,
            "event_type_id": event_types.get("new"),
            "status": new.status,
            "source": _position(env),
            "new_window": _window(new),
        }
        if cls.kind is Kind.BOOKED:
            booked: AppointmentBooked = _validate_booked(data)
            return booked
        old = cls.before
        if old is None:
            return None
        data.update(
            old_company_id=old.company_id,
            old_branch_id=old.branch_id,
            old_service_id=old.service_id,
            old_event_type_id=event_types.get("old"),
            old_window=_window(old),
            changed=list(cls.changed),
        )
        rescheduled: AppointmentRescheduled = _validate_rescheduled(data)
        return rescheduled
    if cls.kind is Kind.CANCELLED:
        old = cls.before
        if old is None or old.id is None:
            return None
        cancelled: AppointmentCancelled = _validate_cancelled(
            {
                "event_id": event_id(env, old.id, "cancelled"),
                "appointment_id": old.id,
                "company_id": old.company_id,
                "branch_id": old.branch_id,
                "service_id": old.service_id,
                "event_type_id": event_types.get("old"),
                "status": cls.after.status if cls.after is not None else old.status,
                "source": _position(env),
                "reason": cls.reason or "status",
                "old_window": _window(old),
            }
        )
        return cancelled
    return None


def derive(read: ReadChange, config: CoreConfig, resolver: EventTypeResolver) -> Outcome:
    """The booking event and cache keys of a read change.

    Raises :class:`~processor.core.errors.UnsafeKeyPart` (an :class:`~schemas.errors.InputError`) when a
    tenant id cannot become part of a key."""
    cls = read.classification
    env = read.envelope
    if cls is None or env is None:
        return Outcome(op=read.op, source_ts_ms=read.source_ts_ms)
    warnings = list(cls.warnings)
    if cls.kind is Kind.NOTHING:
        return Outcome(warnings=tuple(dict.fromkeys(warnings)), op=read.op, source_ts_ms=read.source_ts_ms)
    keys: set[str] = set()
    event_types: dict[str, str | None] = {}
    # The slots the change touches: the old one is freed (cancel, reschedule), the new one taken.
    if cls.kind in (Kind.CANCELLED, Kind.RESCHEDULED) and cls.before is not None:
        event_types["old"] = _event_type(cls.before, resolver, warnings)
        _keys_for(cls.before, event_types["old"], config, resolver, keys, warnings)
    if cls.kind in (Kind.BOOKED, Kind.RESCHEDULED, Kind.TOUCHED) and cls.after is not None:
        event_types["new"] = _event_type(cls.after, resolver, warnings)
        _keys_for(cls.after, event_types["new"], config, resolver, keys, warnings)
    event = _build_event(cls, env, event_types)
    ordered = sorted(keys)
    prefix = config.redis_key_prefix
    return Outcome(
        records=(EventRecord(event.type, event.appointment_id.encode(), event.to_json()),)
        if event is not None
        else (),
        keys=ordered,
        redis_keys=[prefix + k for k in ordered] if prefix else list(ordered),
        warnings=tuple(dict.fromkeys(warnings)),
        unresolved_event_types=list(event_types.values()).count(None),
        op=read.op,
        source_ts_ms=read.source_ts_ms,
    )


def process_change(value: bytes | str | None, config: CoreConfig, resolver: EventTypeResolver) -> Outcome:
    """Read and derive in one call, for a resolver that already knows everything (``slotguard explain``,
    tests, the bench). Raises :class:`~schemas.errors.InputError` subclasses with a one-line message."""
    return derive(read_change(value, config), config, resolver)
