"""Property-based checks of the core (hypothesis; modest example counts keep the suite fast)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.core.classify import StatusPolicy, classify
from processor.core.config import CoreConfig
from processor.core.derive import derive, process_change
from processor.core.outcome import Outcome
from processor.core.read import read_change
from schemas.errors import InputError
from schemas.rows import APPOINTMENT_FIELDS, AppointmentRow
from tests.support.changes import appointment, config, envelope, resolver

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZONES = ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kathmandu"]
CONFIGS: dict[tuple[str, int, int], CoreConfig] = {}
DEFAULT_CONFIG = config()


def _config(zone: str, before: int, after: int) -> CoreConfig:
    key = (zone, before, after)
    if key not in CONFIGS:
        CONFIGS[key] = config(key_timezone=zone, window_hours_before=before, window_hours_after=after)
    return CONFIGS[key]


starts = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
durations = st.one_of(
    st.none(), st.integers(min_value=-120, max_value=72 * 60).map(lambda m: timedelta(minutes=m))
)
tenants = st.tuples(st.integers(1, 40), st.one_of(st.none(), st.integers(1, 5)))
window_settings = st.tuples(st.sampled_from(ZONES), st.integers(0, 3), st.integers(0, 3))


def _row(
    start: datetime, duration: timedelta | None, tenant: tuple[int, int | None], **extra: Any
) -> dict[str, Any]:
    end = None if duration is None else (start + duration).isoformat()
    return appointment(
        starts_at=start.isoformat(), ends_at=end, company_id=tenant[0], branch_id=tenant[1], **extra
    )


def _keys(row: dict[str, Any], cfg: CoreConfig) -> list[str]:
    return process_change(orjson.dumps(envelope("c", after=row)), cfg, resolver()).keys


@FAST
@given(start=starts, duration=durations, tenant=tenants, ws=window_settings)
def test_keys_are_unique_sorted_and_cover_the_start_bucket(
    start: datetime, duration: timedelta | None, tenant: tuple[int, int | None], ws: tuple[str, int, int]
) -> None:
    """Keys are sorted and unique, and the key of the start's bucket is always among them."""
    cfg = _config(*ws)
    keys = _keys(_row(start, duration, tenant), cfg)
    assert keys == sorted(set(keys))
    start_bucket = cfg.window.bucket_of(int(start.timestamp()))
    (expected,) = cfg.template.render(
        str(tenant[0]), None if tenant[1] is None else str(tenant[1]), "123", [start_bucket]
    )
    assert expected in keys
    assert len(keys) >= 1 + ws[1] + ws[2] - (1 if ws[2] else 0)


@FAST
@given(
    old_start=starts,
    new_start=starts,
    duration=durations,
    old_tenant=tenants,
    new_tenant=tenants,
    ws=window_settings,
)
def test_reschedule_is_the_union_of_old_and_new_windows_in_their_own_tenants(
    old_start: datetime,
    new_start: datetime,
    duration: timedelta | None,
    old_tenant: tuple[int, int | None],
    new_tenant: tuple[int, int | None],
    ws: tuple[str, int, int],
) -> None:
    """Keys of a move = keys of booking the old slot ∪ keys of booking the new one; no other tenant's keys."""
    cfg = _config(*ws)
    old, new = _row(old_start, duration, old_tenant), _row(new_start, duration, new_tenant)
    outcome = process_change(orjson.dumps(envelope("u", before=old, after=new)), cfg, resolver())
    expected = sorted(set(_keys(old, cfg)) | set(_keys(new, cfg)))
    if old == new:
        expected = []
    assert outcome.keys == expected
    prefixes = {f"cal_slots_{t[0]}_{'' if t[1] is None else t[1]}_" for t in (old_tenant, new_tenant)}
    assert all(any(k.startswith(p) for p in prefixes) for k in outcome.keys)


statuses = st.one_of(
    st.none(), st.sampled_from(["scheduled", "cancelled", "no_show", "pending"]), st.text(max_size=8)
)
maybe_time = st.one_of(st.none(), starts)
ids = st.one_of(st.none(), st.text(max_size=4), st.integers(0, 9).map(str))
rows = st.builds(
    AppointmentRow,
    id=ids,
    company_id=ids,
    branch_id=ids,
    service_id=ids,
    starts_at=maybe_time,
    ends_at=maybe_time,
    status=statuses,
    deleted_at=maybe_time,
)


@FAST
@given(
    op=st.sampled_from(["c", "u", "d", "r", "t", "m"]),
    before=st.one_of(st.none(), rows),
    after=st.one_of(st.none(), rows),
)
def test_classification_never_raises(
    op: str, before: AppointmentRow | None, after: AppointmentRow | None
) -> None:
    """classify() returns a classification for any decoded rows and op."""
    result = classify(op, before, after, StatusPolicy.of(frozenset({"scheduled"}), frozenset({"cancelled"})))
    assert result.kind.value in {"booked", "rescheduled", "cancelled", "touched", "nothing"}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
row_like = st.dictionaries(
    st.sampled_from(
        ["id", "company_id", "branch_id", "service_id", "starts_at", "ends_at", "status", "deleted_at"]
    ),
    json_values
    | st.integers(-(10**19), 10**19)
    | st.sampled_from(["2025-10-15T14:00:00Z", "__debezium_unavailable_value"]),
)
envelope_like = st.fixed_dictionaries(
    {"op": st.sampled_from(["c", "u", "d", "r", "x"])},
    optional={
        "before": st.none() | row_like,
        "after": st.none() | row_like,
        "source": json_values,
        "ts_ms": json_values,
    },
)


def _outcome_or_error(raw: bytes) -> Outcome | InputError:
    try:
        return process_change(raw, DEFAULT_CONFIG, resolver())
    except InputError as exc:
        return exc


@FAST
@given(
    value=st.one_of(
        json_values, envelope_like, st.fixed_dictionaries({"schema": json_values, "payload": envelope_like})
    )
)
def test_decoder_never_crashes_on_arbitrary_json(value: Any) -> None:
    """Any JSON value yields an Outcome or a typed one-line InputError, never another exception."""
    # stdlib json: it also writes integers beyond 64 bits, which the decoder must survive.
    result = _outcome_or_error(json.dumps(value).encode())
    if isinstance(result, InputError):
        assert "\n" not in str(result)
    else:
        assert result.keys == sorted(set(result.keys))


@FAST
@given(value=st.binary(max_size=64))
def test_decoder_never_crashes_on_arbitrary_bytes(value: bytes) -> None:
    """Arbitrary bytes yield an Outcome or a typed InputError."""
    assert isinstance(_outcome_or_error(value), Outcome | InputError)


# --- the core's boundary: what the worker calls per record -------------------------------------------------


def _per_record(raw: bytes) -> Outcome | InputError:
    """What the worker does with one record: read it, then derive it."""
    cfg, res = DEFAULT_CONFIG, resolver()
    try:
        return derive(read_change(raw, cfg), cfg, res)
    except InputError as exc:
        return exc


def _outcome_or_one_line_error(raw: bytes) -> bool:
    result = _per_record(raw)
    return isinstance(result, Outcome) or (isinstance(result, InputError) and "\n" not in str(result))


def _nest(depth: int, opener: bytes, closer: bytes, leaf: bytes) -> bytes:
    return opener * depth + leaf + closer * depth


deep_json = st.builds(
    lambda depth, opener, leaf: _nest(depth, opener, b"]" if opener == b"[" else b"}", leaf),
    st.integers(1, 200_000),
    st.sampled_from([b"[", b'{"a":', b'{"after":']),
    st.sampled_from([b"1", b'"15"', b"null", b"{}"]),
)
wide_json = st.builds(
    lambda n, item: b"[" + b",".join([item] * n) + b"]",
    st.integers(1, 50_000),
    st.sampled_from([b"1", b'"x"', b"{}", b"[]", b"null"]),
)
_COLUMNS = [*APPOINTMENT_FIELDS, "notes"]


@st.composite
def hostile_values(draw: st.DrawFn) -> bytes:
    """A valid booking with one column, image or the whole value replaced by deep or wide JSON."""
    inner = draw(st.one_of(deep_json, wide_json))
    where = draw(st.sampled_from([*_COLUMNS, "after", "before", "source", "whole"]))
    if where == "whole":
        return inner
    marker = "\x00m\x00"
    if where in ("after", "before", "source"):
        env = envelope("u", appointment(), appointment(status="cancelled"))
        env[where] = marker
    else:
        env = envelope("c", None, appointment(**{where: marker}))
    return orjson.dumps(env).replace(orjson.dumps(marker), inner, 1)


@FAST
@given(value=hostile_values())
def test_deep_or_wide_json_anywhere_yields_an_outcome_or_an_input_error(value: bytes) -> None:
    """Nesting past every parser's limit and very wide values, in any column, image or the whole value."""
    assert _outcome_or_one_line_error(value)


@FAST
@given(
    value=st.one_of(
        json_values, envelope_like, st.fixed_dictionaries({"schema": json_values, "payload": envelope_like})
    )
)
def test_the_worker_s_per_record_steps_yield_an_outcome_or_an_input_error_for_any_json(value: Any) -> None:
    assert _outcome_or_one_line_error(json.dumps(value).encode())


@FAST
@given(value=st.binary(max_size=256))
def test_the_worker_s_per_record_steps_yield_an_outcome_or_an_input_error_for_any_bytes(value: bytes) -> None:
    assert _outcome_or_one_line_error(value)
