"""The compiled fast path: the common change in one pass, or ``None`` -- then the reference path decides.

The reference path (:mod:`processor.core.read`, :mod:`processor.core.derive`) handles every shape of
change and words every error; it validates the whole envelope with pydantic, builds row, classification
and event objects, and costs ~30 µs a change. Most changes have one shape: a bare ``JsonConverter``
envelope from the Postgres connector (an LSN in ``source``), ids as integers or strings, ISO or epoch
times, a known status, a service whose event type the resolver knows in the row's own company. For
those, :meth:`FastPath.outcome` decodes only the fields the core reads (a msgspec struct per column
mapping, compiled once) and computes keys and event records straight away.

Whenever anything is unusual -- a wrapped envelope, a TOAST placeholder, an unknown status, an unknown or
foreign service, an unsafe tenant id, a value of the wrong type, a window longer than a day, no LSN --
it returns ``None`` and the caller runs the reference path, which produces the outcome, the warning or the
error. So the two paths cannot disagree by construction on anything unusual, and
``tests/unit/test_fastpath.py`` checks (hypothesis, against the reference) that they agree on the rest:
the same keys, the same event bytes, the same op and commit time.

One documented difference: bytes in a column slotguard never reads are not parsed, so a number there
beyond a double's range, which ``orjson`` refuses, does not send the change to the dead-letter topic
(invalid UTF-8 anywhere still does: it is checked before decoding).

This module is also compiled to C by mypyc when the package is installed (``setup.py``; interpreted where
no C compiler is at hand -- ``slotguard.fastpath_build`` says which runs). So it keeps to what mypyc
compiles faithfully: its msgspec structs are defined in :mod:`processor.core.faststructs`, and the
differential tests run on both builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any, Final, Literal

import msgspec
import msgspec.structs
import orjson

from processor.core.classify import StatusPolicy
from processor.core.decode import may_repeat_keys
from processor.core.errors import UnsafeKeyPart
from processor.core.faststructs import (
    UNSET,
    BookedJson,
    CancelledJson,
    Int,
    RescheduledJson,
    Source,
    SourceJson,
    Transaction,
    encode,
)
from processor.core.keys import KeyTemplate, TenantGuard
from processor.core.outcome import EventRecord, Outcome, lsn_event_id
from processor.core.resolver import EventTypeResolver
from processor.core.window import HourWindow
from schemas.rows import APPOINTMENT_FIELDS, MAX_ID_CHARS, MAX_STATUS_CHARS, column_tokens
from schemas.temporal import TOAST_PLACEHOLDER, TemporalError, decode_instant

_CACHE_LIMIT: Final = 1 << 16
#: Longest window (in hour buckets) the fast path renders; longer ones go to the reference path.
_MAX_FAST_BUCKETS: Final = 26
_INT = Int
_ID_TYPE = _INT | str | None


#: A struct's fields as a tuple, in one C call: compiled code reads a struct's attribute through the generic
#: lookup (type cache, descriptor: ~100 instructions each, callgrind), and the envelope and row images were
#: ~15 of the ~34 such reads a change made.
_astuple: Final = msgspec.structs.astuple


def _row_struct(columns: Mapping[str, str]) -> type[msgspec.Struct]:
    """A struct of the mapped columns only: the rest of a row image is skipped, not built."""
    types: dict[str, Any] = {
        "id": _ID_TYPE,
        "company_id": _ID_TYPE,
        "branch_id": _ID_TYPE,
        "service_id": _ID_TYPE,
        "starts_at": _INT | str | None,
        "ends_at": _INT | str | None,
        "status": str | None,
        "deleted_at": _INT | str | None,
    }
    return msgspec.defstruct(
        "Row",
        [(f, types[f], None) for f in APPOINTMENT_FIELDS],
        rename=dict(columns),
        gc=False,
    )


def _envelope_struct(row: type[msgspec.Struct]) -> type[msgspec.Struct]:
    return msgspec.defstruct(
        "Envelope",
        [
            ("op", Literal["c", "u", "d", "r", "t", "m"]),
            ("before", row | None, None),
            ("after", row | None, None),
            ("ts_ms", _INT | None, None),
            ("source", Source | None, None),
            ("transaction", Transaction | None, None),
            # A bare envelope that also has both keys is read as a wrapped one by the reference.
            ("wrapped_schema", Any, UNSET),
            ("wrapped_payload", Any, UNSET),
        ],
        rename={"wrapped_schema": "schema", "wrapped_payload": "payload"},
        gc=False,
    )


class _Fallback(Exception):
    """Internal: this change is not the fast path's; the reference path decides."""


class _Row:
    """A row image, normalised as :class:`schemas.rows.AppointmentRow` would hold it."""

    __slots__ = (
        "branch",
        "buckets",
        "company",
        "deleted",
        "ends",
        "id",
        "occupying",
        "service",
        "starts",
        "status",
        "tails",
        "window_json",
    )

    id: str | None
    company: str | None
    branch: str | None
    service: str | None
    starts: datetime | None
    ends: datetime | None
    #: The window's hour buckets; ``None`` without a start or when too long for the fast path. A tuple, as
    #: every part of a cached window: the cycle collector stops tracking a tuple of untracked members, and
    #: the worker's collections walked ~40,000 cached objects under a stream of new windows (a list each).
    buckets: tuple[int, ...] | None
    #: The window's key tails, sorted and unique (templates that split; else ``None``).
    tails: tuple[str, ...] | None
    #: ``{"starts_at": …, "ends_at": …}`` as the events write it, serialised once per window.
    window_json: msgspec.Raw
    status: str | None
    deleted: datetime | None
    #: Whether the row holds its slot: ``None`` when that depends on a status the policy does not know
    #: (the reference path warns about it), so the caller falls back only if it asks.
    occupying: bool | None


#: A cached window: start, end, hour buckets, key tails, its JSON (see :class:`_Row`).
_Window = tuple[datetime | None, datetime | None, tuple[int, ...] | None, tuple[str, ...] | None, msgspec.Raw]


class FastPath:
    """Compiled once per configuration; :meth:`outcome` is called per change."""

    def __init__(
        self,
        *,
        columns: Mapping[str, str],
        source_zone: tzinfo,
        statuses: StatusPolicy,
        window: HourWindow,
        template: KeyTemplate,
        guard: TenantGuard,
        redis_key_prefix: str,
    ) -> None:
        self._decode = msgspec.json.Decoder(_envelope_struct(_row_struct(columns))).decode
        self._zone = source_zone
        self._statuses = statuses
        self._window = window
        self._template = template
        self._guard = guard
        self._prefix = redis_key_prefix
        self._times: dict[int | str, datetime] = {}
        self._status_cache: dict[str | None, tuple[str | None, bool | None]] = {}
        #: (raw company, branch, service) -> the ids as strings: one lookup instead of three conversions.
        self._ids: dict[tuple[object, object, object], tuple[str | None, str | None, str | None]] = {}
        #: (raw start, raw end) -> the window, its buckets and its key tails.
        self._windows: dict[tuple[object, object], _Window] = {}
        #: (company, branch, event type) -> the key head, for tenants whose parts passed the guard.
        self._heads: dict[tuple[str, str | None, str], str] = {}
        self._splits = template.splits
        self._tokens = column_tokens(columns.values())

    @classmethod
    def compile(cls, **parts: Any) -> FastPath | None:
        """A fast path, or ``None`` when the column mapping cannot be one struct (two fields, one column)."""
        try:
            return cls(**parts)
        except (TypeError, ValueError, msgspec.MsgspecError):
            return None

    # --- reading -------------------------------------------------------------------------------------

    def _time(self, raw: int | str | None) -> datetime | None:
        if raw is None:
            return None
        cached = self._times.get(raw)
        if cached is None:
            if raw == TOAST_PLACEHOLDER:
                raise _Fallback
            try:
                cached = decode_instant(raw, None, self._zone)
            except TemporalError:
                raise _Fallback from None
            assert cached is not None
            if len(self._times) >= _CACHE_LIMIT:
                self._times.clear()
            self._times[raw] = cached
        return cached

    def _status(self, raw: str | None) -> tuple[str | None, bool | None]:
        """The normalised status and whether it occupies (``None``: a status the policy does not know)."""
        cached = self._status_cache.get(raw)
        if cached is None:
            if raw is None:  # cached too: a null status must not miss (and raise) on every change
                self._status_cache[None] = cached = (None, True)
                return cached
            if raw == TOAST_PLACEHOLDER or len(raw) > MAX_STATUS_CHARS:
                raise _Fallback
            status = raw.strip().lower()
            policy = self._statuses
            occupying = (
                True if status in policy.occupying else False if status in policy.non_occupying else None
            )
            cached = (status, occupying)
            if len(self._status_cache) >= _CACHE_LIMIT:
                self._status_cache.clear()
            self._status_cache[raw] = cached
        return cached

    def _row(self, image: Any) -> _Row:
        # Written out (no helper per field): this runs once or twice per change, and each kind of raw
        # value (ids, window, status) is one cache lookup. An unchanged TOASTed column (the placeholder)
        # goes to the reference path, which takes it from the other image: the miss paths check for it,
        # so no cached value is ever the placeholder (a time that is one fails to parse).
        row = _Row()
        # In APPOINTMENT_FIELDS' order (the row struct's).
        raw, company, branch, service, starts_at, ends_at, status, deleted_at = _astuple(image)
        if raw == TOAST_PLACEHOLDER or (type(raw) is str and len(raw) > MAX_ID_CHARS):
            raise _Fallback
        row.id = str(raw) if type(raw) is int else raw
        # Subscripts, not .get(): a hit (nearly every lookup) is then one specialised instruction instead
        # of a method call; a miss raises, and the miss path costs far more than the raise anyway.
        tenant = (company, branch, service)
        try:
            row.company, row.branch, row.service = self._ids[tenant]
        except KeyError:
            row.company, row.branch, row.service = self._ids_of(tenant)
        span = (starts_at, ends_at)
        try:
            row.starts, row.ends, row.buckets, row.tails, row.window_json = self._windows[span]
        except KeyError:
            row.starts, row.ends, row.buckets, row.tails, row.window_json = self._window_of(span)
        row.deleted = deleted = None if deleted_at is None else self._time(deleted_at)
        try:
            row.status, occupying = self._status_cache[status]
        except KeyError:
            row.status, occupying = self._status(status)
        # Unscheduled or soft-deleted rows hold no slot, whatever their status.
        row.occupying = occupying if row.starts is not None and deleted is None else False
        return row

    def _ids_of(self, tenant: tuple[object, object, object]) -> tuple[str | None, str | None, str | None]:
        if TOAST_PLACEHOLDER in tenant:
            raise _Fallback
        if any(type(v) is str and len(v) > MAX_ID_CHARS for v in tenant):
            raise _Fallback
        ids = tuple(str(v) if type(v) is int else v for v in tenant)
        if len(self._ids) >= _CACHE_LIMIT:
            self._ids.clear()
        self._ids[tenant] = ids  # type: ignore[assignment]
        return ids  # type: ignore[return-value]

    def _window_of(self, span: tuple[Any, Any]) -> _Window:
        starts, ends = self._time(span[0]), self._time(span[1])
        buckets: tuple[int, ...] | None = None
        tails: tuple[str, ...] | None = None
        if starts is not None:
            covered, truncated = self._window.buckets(starts, ends)
            if not truncated and len(covered) <= _MAX_FAST_BUCKETS:
                buckets = tuple(covered)
            if buckets is not None and self._splits:
                tail = self._template.tail
                tails = tuple(sorted({tail(b) for b in buckets}))
        window = (
            starts,
            ends,
            buckets,
            tails,
            # Decoded to a str of its own size: orjson's bytes keep their ~2 KB write buffer, which made
            # this cache 17 MB at 8,600 windows (tracemalloc) instead of under 1 MB.
            msgspec.Raw(orjson.dumps({"starts_at": starts, "ends_at": ends}).decode()),
        )
        if len(self._windows) >= _CACHE_LIMIT:
            self._windows.clear()
        self._windows[span] = window
        return window

    # --- keys ----------------------------------------------------------------------------------------

    def _keys(self, row: _Row, resolver: EventTypeResolver, keys: list[str]) -> str:
        """Add the keys of ``row``'s window to ``keys`` (for a splitting template: sorted, unique); its
        event type."""
        company, service = row.company, row.service
        if company is None or service is None:
            raise _Fallback
        info = resolver.service(service)
        if info is None:
            raise _Fallback  # a lookup, the company policy or the skip policy: the reference path
        event_type = info.event_type_id
        if event_type is None:
            raise _Fallback
        owner = info.company_id
        if owner is not None and owner != company:
            raise _Fallback  # the reference warns about the foreign service
        if row.buckets is None:
            raise _Fallback
        tenant = (company, row.branch or None, event_type)
        try:
            head = self._heads[tenant]
        except KeyError:
            head = self._head(tenant)
        tails = row.tails
        if tails is not None:
            for tail in tails:  # one or two: a loop of appends costs less than extending by a map
                keys.append(head + tail)
        else:  # a template with a tenant field after the times
            keys += self._template.render(company, tenant[1], event_type, row.buckets)
        return event_type

    def _head(self, tenant: tuple[str, str | None, str]) -> str:
        """The key head of a tenant ("" when the template has none), once its parts passed the guard."""
        company, branch, event_type = tenant
        check = self._guard.check
        try:
            check("company_id", company)
            if branch:
                check("branch_id", branch)
            check("event_type_id", event_type)
        except UnsafeKeyPart:
            raise _Fallback from None
        head = self._template.head(company, branch, event_type)
        if len(self._heads) >= _CACHE_LIMIT:
            self._heads.clear()
        self._heads[tenant] = head
        return head

    # --- the change ----------------------------------------------------------------------------------

    def outcome(self, value: bytes | str | None, resolver: EventTypeResolver) -> Outcome | None:
        """The outcome of the change, or ``None`` when the reference path must decide."""
        if value is None:
            return None
        if type(value) is bytes and not value.isascii():
            try:
                value.decode()  # orjson refuses invalid UTF-8 anywhere; msgspec checks only what it reads
            except UnicodeDecodeError:
                return None
        try:
            env: Any = self._decode(value)
        except (msgspec.DecodeError, RecursionError):
            # RecursionError: msgspec skips an unread column by recursing, as deep as it nests.
            return None
        # In _envelope_struct's field order.
        op, before_image, after_image, env_ts_ms, src, _, wrapped_schema, wrapped_payload = _astuple(env)
        if may_repeat_keys(value, self._tokens, (before_image is not None) + (after_image is not None)):
            return None  # a column named twice: the reference path checks exactly
        if wrapped_schema is not UNSET and wrapped_payload is not UNSET:
            return None
        ts_ms = src.ts_ms if src is not None and src.ts_ms is not None else env_ts_ms
        if op != "c" and op != "u" and op != "d":
            return Outcome(op=op, source_ts_ms=ts_ms)
        if src is None or src.lsn is None or src.tx_id is not UNSET or src.schema_ is not UNSET:
            return None  # the event id then hashes the whole envelope: the reference path
        if op == "u" and before_image is not None and after_image is not None and before_image == after_image:
            return Outcome(op=op, source_ts_ms=ts_ms)  # no column the core reads changed
        try:
            return self._derive(op, ts_ms, src, before_image, after_image, resolver)
        except _Fallback:
            return None

    def _derive(
        self,
        op: str,
        ts_ms: int | None,
        src: Source,
        before_image: Any,
        after_image: Any,
        resolver: EventTypeResolver,
    ) -> Outcome:
        # Written out (events and outcomes made here, not in helpers): the helper calls this replaced
        # cost ~1,100 of ~44,700 instructions a change (callgrind).
        keys: list[str] = []
        # Both images are read when present, as the reference reads them: a bad value in either is its error.
        old = self._row(before_image) if before_image is not None else None
        new = self._row(after_image) if after_image is not None else None
        if op == "d":
            if old is None or old.starts is None or old.id is None:
                raise _Fallback
            was = old.occupying
            if was is None:
                raise _Fallback  # the reference warns about the status
            if not was:
                return Outcome(op=op, source_ts_ms=ts_ms)
            event_type = self._keys(old, resolver, keys)
            event = EventRecord(
                "cancelled",
                old.id.encode(),
                None,
                _cancelled_json,
                (old, None, "delete", event_type, src, op),
            )
            return self._done(op, ts_ms, keys, event)
        if new is None:
            raise _Fallback
        if op == "c":
            if new.id is None:
                return Outcome(op=op, source_ts_ms=ts_ms)
            now = new.occupying
            if now is None:
                raise _Fallback
            if not now:
                return Outcome(op=op, source_ts_ms=ts_ms)
            event_type = self._keys(new, resolver, keys)
            event = EventRecord("booked", new.id.encode(), None, _booked_json, (new, event_type, src, op))
            return self._done(op, ts_ms, keys, event)
        if old is None or new.id is None:
            raise _Fallback  # REPLICA IDENTITY DEFAULT, or no id: the reference warns
        was, now = old.occupying, new.occupying
        if was is None or now is None:
            raise _Fallback
        if was and now:
            changed: list[str] = []  # in the models' field order
            if old.starts != new.starts:
                changed.append("starts_at")
            if old.ends != new.ends:
                changed.append("ends_at")
            if old.company != new.company:
                changed.append("company_id")
            if old.branch != new.branch:
                changed.append("branch_id")
            if old.service != new.service:
                changed.append("service_id")
            if not changed:
                return Outcome(op=op, source_ts_ms=ts_ms)
            old_type = self._keys(old, resolver, keys)
            new_type = self._keys(new, resolver, keys)
            event = EventRecord(
                "rescheduled",
                new.id.encode(),
                None,
                _rescheduled_json,
                (old, new, old_type, new_type, changed, src, op),
            )
            return self._done(op, ts_ms, keys, event, 2)
        if now:
            event_type = self._keys(new, resolver, keys)
            event = EventRecord("booked", new.id.encode(), None, _booked_json, (new, event_type, src, op))
            return self._done(op, ts_ms, keys, event)
        if was:
            if old.id is None:
                raise _Fallback  # keys but no event: the reference path
            if new.deleted is not None and old.deleted is None:
                reason = "soft_delete"
            elif new.starts is None:
                reason = "unscheduled"
            else:
                reason = "status"
            event_type = self._keys(old, resolver, keys)
            event = EventRecord(
                "cancelled", old.id.encode(), None, _cancelled_json, (old, new, reason, event_type, src, op)
            )
            return self._done(op, ts_ms, keys, event)
        return Outcome(op=op, source_ts_ms=ts_ms)

    def _done(
        self, op: str, ts_ms: int | None, keys: list[str], event: EventRecord, windows: int = 1
    ) -> Outcome:
        # One window of a splitting template is sorted and unique already (its tails are).
        ordered = keys if windows == 1 and self._splits else sorted(set(keys))
        prefix = self._prefix
        return Outcome(
            (event,),
            ordered,
            [prefix + k for k in ordered] if prefix else ordered,
            (),
            0,
            op,
            ts_ms,
        )


# --- events: made when published, the same bytes as the models' to_json (structs: faststructs) ---------


def _booked_json(new: _Row, event_type: str, src: Source, op: str) -> bytes:
    return encode(
        BookedJson(
            "booked",
            lsn_event_id(src.db, src.lsn, src.txId, new.id, "booked"),
            new.id,
            new.company,
            new.branch,
            new.service,
            event_type,
            new.status,
            SourceJson(src.lsn, src.txId, src.ts_ms, src.db, src.table, op),
            new.window_json,
        )
    )


def _rescheduled_json(
    old: _Row, new: _Row, old_type: str, new_type: str, changed: list[str], src: Source, op: str
) -> bytes:
    return encode(
        RescheduledJson(
            "rescheduled",
            lsn_event_id(src.db, src.lsn, src.txId, new.id, "rescheduled"),
            new.id,
            new.company,
            new.branch,
            new.service,
            new_type,
            new.status,
            SourceJson(src.lsn, src.txId, src.ts_ms, src.db, src.table, op),
            old.company,
            old.branch,
            old.service,
            old_type,
            old.window_json,
            new.window_json,
            changed,
        )
    )


def _cancelled_json(old: _Row, new: _Row | None, reason: str, event_type: str, src: Source, op: str) -> bytes:
    return encode(
        CancelledJson(
            "cancelled",
            lsn_event_id(src.db, src.lsn, src.txId, old.id, "cancelled"),
            old.id,
            old.company,
            old.branch,
            old.service,
            event_type,
            new.status if new is not None else old.status,
            SourceJson(src.lsn, src.txId, src.ts_ms, src.db, src.table, op),
            reason,
            old.window_json,
        )
    )
