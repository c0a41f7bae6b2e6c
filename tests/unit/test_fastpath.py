"""The fast path agrees with the reference path: same keys, same event bytes, same op and commit time --
or it steps aside (``None``) and the reference path decides. Differential tests against the reference."""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import processor.core.fastpath
from processor.core.config import CoreConfig
from processor.core.derive import process_change, reference_outcome
from processor.core.errors import MalformedChange
from processor.core.outcome import Outcome
from processor.core.resolver import EventTypeResolver
from schemas.errors import InputError
from schemas.events import parse_booking_event
from slotguard.bench.core_bench import resolver as bench_resolver
from slotguard.bench.workload import changes
from slotguard.fastpath_build import COMPILED, INTERPRETED, fast_path_build
from tests.support.changes import appointment, config, envelope, resolver

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEFAULT = config()
CONFIGS = {
    "default": DEFAULT,
    "prefixed, Berlin, 0/2 hours": config(
        redis_key_prefix="app1:", key_timezone="Europe/Berlin", window_hours_before=0, window_hours_after=2
    ),
    "renamed columns": config(
        appointment_columns={"starts_at": "start_time", "ends_at": "end_time", "company_id": "tenant_id"}
    ),
    "tenant after the times": config(key_template="slots:{start:%Y%m%d%H}:{company}:{branch}:{event_type}"),
    "source in Kolkata": config(source_timezone="Asia/Kolkata"),
    # A permissive tenant pattern (the guard still refuses the key separator '_').
    "word tenant ids": config(tenant_id_pattern=r"\w+"),
}
RENAMES = {"starts_at": "start_time", "ends_at": "end_time", "company_id": "tenant_id"}


def _interpreted_module() -> ModuleType:
    """``processor/core/fastpath.py`` run from its source, whichever build the package installed."""
    source = Path(processor.core.fastpath.__file__).with_name("fastpath.py")
    spec = importlib.util.spec_from_file_location("processor.core._fastpath_interpreted", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_INTERPRETED = _interpreted_module()


def _interpreted(cfg: CoreConfig) -> CoreConfig:
    """``cfg`` with its fast path from the interpreted source."""
    fast = _INTERPRETED.FastPath.compile(
        columns=cfg.appointments.columns,
        source_zone=cfg.source_zone,
        statuses=cfg.statuses,
        window=cfg.window,
        template=cfg.template,
        guard=cfg.guard,
        redis_key_prefix=cfg.redis_key_prefix,
    )
    assert fast is not None
    return dataclasses.replace(cfg, fast=fast)


#: The differential tests run on the fast path as installed (compiled by mypyc where setup.py could) and
#: on its source interpreted: the two must agree with the reference alike.
BUILDS: dict[str, Callable[[CoreConfig], CoreConfig]] = {
    "installed": lambda cfg: cfg,
    "interpreted": _interpreted,
}


def _comparable(result: Outcome | InputError) -> tuple[Any, ...]:
    if isinstance(result, InputError):
        return (type(result).__name__, str(result))
    return (
        [(r.type, r.key, r.value) for r in result.records],
        result.keys,
        result.redis_keys,
        result.warnings,
        result.unresolved_event_types,
        result.op,
        result.source_ts_ms,
    )


def _run(path: Any, raw: bytes, cfg: CoreConfig, res: EventTypeResolver) -> Outcome | InputError:
    try:
        result: Outcome = path(raw, cfg, res)
    except InputError as exc:
        return exc
    return result


def _agree(raw: bytes, cfg: CoreConfig, res: EventTypeResolver) -> bool:
    """Assert the paths agree on ``raw``; whether the fast path took it."""
    assert cfg.fast is not None
    took = cfg.fast.outcome(raw, res) is not None
    assert _comparable(_run(process_change, raw, cfg, res)) == _comparable(
        _run(reference_outcome, raw, cfg, res)
    )
    return took


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_the_benchmark_mix_takes_the_fast_path_and_agrees_byte_for_byte(build: str) -> None:
    """Every change of the bench's mix (creates, reschedules, cancels, noise, soft and hard deletes) takes
    the fast path, and each outcome equals the reference's: keys, event JSON, op, commit time."""
    cfg = BUILDS[build](DEFAULT)
    res = bench_resolver()
    values = [c.value for c in changes(3000, seed=11)]
    assert all(_agree(v, cfg, res) for v in values)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_cached_windows_leave_the_cycle_collector_once_it_has_seen_them_twice(build: str) -> None:
    """Under a stream of new windows the worker's collections walked ~40,000 cached objects, a list per
    window, every second at 2,000 changes/s (13-125 ms each): a cached window holds only tuples."""
    cfg = BUILDS[build](DEFAULT)
    fast = cfg.fast
    assert fast is not None
    res = bench_resolver()
    for change in changes(500, seed=5):
        fast.outcome(change.value, res)
    gc.collect()  # untracks the buckets' and tails' tuples (nothing in them to walk) ...
    gc.collect()  # ... and then the windows holding them
    windows = list(fast._windows.values())
    assert windows
    tracked = [w for w in windows if gc.is_tracked(w)]
    assert not tracked, f"{len(tracked)} of {len(windows)} cached windows still tracked, e.g. {tracked[0]!r}"


def test_the_installed_fast_path_is_compiled_from_its_current_source_in_ci() -> None:
    """CI has a C compiler, so setup.py's mypyc build must have produced the module the worker runs, from
    the source as it is now (shown failing with SLOTGUARD_PURE_PYTHON=1 at install, and after touching
    fastpath.py without installing again). Elsewhere only staleness fails: interpreted is correct."""
    build = fast_path_build()
    if os.environ.get("CI"):
        assert build == COMPILED
    else:
        assert build in (COMPILED, INTERPRETED)


def test_fast_events_are_valid_booking_events() -> None:
    """The events the fast path writes parse as the published event models (extra fields forbidden)."""
    assert DEFAULT.fast is not None
    res = bench_resolver()
    types = set()
    for change in changes(500, seed=3):
        outcome = DEFAULT.fast.outcome(change.value, res)
        assert outcome is not None
        for record in outcome.records:
            event = parse_booking_event(record.value)
            assert (event.type, event.appointment_id.encode()) == (record.type, record.key)
            types.add(event.type)
    assert types == {"booked", "rescheduled", "cancelled"}


# --- generated changes -----------------------------------------------------------------------------

ids = st.one_of(
    st.none(),
    st.integers(-3, 25),
    st.sampled_from(["7", "15", "", "1*", "x y", "a" * 70, "__debezium_unavailable_value"]),
)
times = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2025-10-15T14:00:00Z",
            "2025-10-15T14:30:00+02:00",
            "2025-10-15T15:00:00Z",
            "2025-10-16T09:15:00.123456Z",
            "2025-10-15T14:00:00",  # a timestamp without time zone
            "2025-03-30T01:30:00Z",  # the Berlin DST change
            "2025-10-20T14:00:00Z",  # far: a week-long window
            "not a time",
            "__debezium_unavailable_value",
        ]
    ),
    st.integers(1_700_000_000_000_000, 1_800_000_000_000_000),  # epoch microseconds
    st.integers(1_700_000_000_000, 1_800_000_000_000),  # epoch milliseconds
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
statuses = st.one_of(
    st.none(),
    st.sampled_from(
        ["scheduled", " Confirmed ", "CANCELLED", "no_show", "pending?", "__debezium_unavailable_value"]
    ),
    st.integers(0, 3),
)
clean_times = st.sampled_from(
    ["2025-10-15T14:00:00Z", "2025-10-15T15:00:00Z", "2025-10-15T16:30:00+02:00", "2025-10-15T14:00:00"]
)
#: Rows of the usual shape (known services and statuses, good times): the fast path's own ground.
clean_rows = st.fixed_dictionaries(
    {},
    optional={
        # Any text too: an appointment id goes into the event JSON as it is (quotes, controls and
        # non-ASCII written alike by both paths' encoders).
        "id": st.one_of(st.integers(1, 5), st.text(max_size=6)),
        "company_id": st.sampled_from([15, 20, "15"]),
        "branch_id": st.sampled_from([1, 2, None]),
        "service_id": st.sampled_from([7, 8, 9]),
        "starts_at": clean_times,
        "ends_at": st.one_of(st.none(), clean_times),
        "status": st.sampled_from(["scheduled", "cancelled", "Confirmed", None, "tentative"]),
        "deleted_at": st.sampled_from([None, None, "2025-10-15T10:00:00Z"]),
        "notes": st.text(max_size=8),
    },
)
wild_rows = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "company_id": ids,
        "branch_id": ids,
        "service_id": st.one_of(ids, st.sampled_from([7, 8, 9, 10, 77])),
        "starts_at": times,
        "ends_at": times,
        "status": statuses,
        "deleted_at": st.one_of(st.none(), times),
        "notes": st.one_of(st.text(max_size=20), st.just(1e300)),
    },
)
row_changes = st.one_of(clean_rows, clean_rows, clean_rows, wild_rows)
wild_sources = st.fixed_dictionaries(
    {},
    optional={
        "lsn": st.one_of(st.none(), st.integers(0, 2**40), st.just("12")),
        "txId": st.one_of(st.none(), st.integers(0, 2**31)),
        "ts_ms": st.one_of(st.none(), st.integers(0, 2**42), st.just(True)),
        "db": st.one_of(st.none(), st.just("app"), st.integers(0, 1), st.text(max_size=6)),
        "version": st.one_of(st.just("3.6.3.Final"), st.integers(0, 1)),
        "snapshot": st.sampled_from(["false", "true", "last", False]),
        "tx_id": st.integers(0, 9),
    },
)
sources: st.SearchStrategy[dict[str, Any]] = st.one_of(st.just({}), st.just({}), wild_sources)


def _image(changes: dict[str, Any], renamed: bool) -> dict[str, Any]:
    row = appointment(**changes)
    if renamed:
        row = {RENAMES.get(k, k): v for k, v in row.items()}
    return row


@st.composite
def raw_changes(draw: st.DrawFn, renamed: bool = False) -> bytes:
    op = draw(st.sampled_from(["c", "c", "u", "u", "u", "u", "d", "d", "r", "t", "m"]))
    empty: dict[str, Any] = {}
    before: dict[str, Any] | None = draw(st.one_of(st.none(), row_changes if op != "c" else st.just(empty)))
    after: dict[str, Any] | None = draw(st.one_of(st.none(), row_changes)) if op != "d" else None
    if op == "u" and before is not None and after is not None and draw(st.booleans()):
        after = {**before, **after}  # mostly the same row, a few columns changed
    env = envelope(
        op,
        before=_image(before, renamed) if before is not None else None,
        after=_image(after, renamed) if after is not None else None,
    )
    env["source"].update(draw(sources))
    if draw(st.integers(0, 9)) == 0:
        env["source"] = None
    if draw(st.integers(0, 19)) == 0:
        env["transaction"] = draw(st.sampled_from([{"id": "1:2"}, {"id": 5}, {"total_order": 1}]))
    if draw(st.integers(0, 19)) == 0:
        env = {"schema": None, "payload": env}
    return json.dumps(env).encode()


def _taken_sometimes(took: list[bool]) -> None:
    # Guards against a vacuous pass: a good share of the generated changes must take the fast path.
    assert sum(took) >= len(took) // 10, f"the fast path took {sum(took)} of {len(took)}"


TOOK: dict[str, list[bool]] = {}


@pytest.mark.parametrize("build", sorted(BUILDS))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_generated_changes_agree_under_each_configuration(name: str, build: str) -> None:
    """Generated changes -- any op, odd ids and times, unknown statuses, foreign or unknown services,
    TOAST placeholders, wrong types, missing LSNs, wrapped envelopes -- give the same outcome or the same
    one-line error through process_change as through the reference path alone."""
    cfg = BUILDS[build](CONFIGS[name])
    res = resolver()
    took: list[bool] = []

    @EXAMPLES
    @given(raw=raw_changes(renamed=name == "renamed columns"))
    def check(raw: bytes) -> None:
        took.append(_agree(raw, cfg, res))

    check()
    _taken_sometimes(took)


def test_a_change_the_fast_path_cannot_read_goes_to_the_reference_path() -> None:
    """Wrapped envelopes, TOAST placeholders and unknown statuses step aside (None), and the reference
    path gives its outcome: the TOASTed status taken from the before image, the status warning."""
    assert DEFAULT.fast is not None
    res = resolver()
    wrapped = orjson.dumps({"schema": None, "payload": envelope("c", after=appointment())})
    toast = orjson.dumps(
        envelope(
            "u",
            before=appointment(),
            after=appointment(starts_at="2025-10-15T16:00:00Z", status="__debezium_unavailable_value"),
        )
    )
    unknown = orjson.dumps(envelope("c", after=appointment(status="tentative")))
    for raw in (wrapped, toast, unknown):
        assert DEFAULT.fast.outcome(raw, res) is None
    assert [e.status for e in process_change(toast, DEFAULT, res).events] == ["scheduled"]
    assert "unknown status 'tentative'" in process_change(unknown, DEFAULT, res).warnings[0]


@pytest.mark.parametrize(
    "column", ["id", "company_id", "branch_id", "service_id", "starts_at", "ends_at", "status", "deleted_at"]
)
def test_a_toasted_column_in_a_reschedule_steps_aside_for_the_reference_path(column: str) -> None:
    """The placeholder of an unchanged TOASTed column, in any column the core reads, sends the change to
    the reference path, which takes the value from the other image (shown failing for the id: without its
    check the fast path published an event for appointment '__debezium_unavailable_value')."""
    cfg = CONFIGS["word tenant ids"]
    assert cfg.fast is not None
    res = resolver()
    before = appointment()
    after = {**before, "starts_at": "2025-10-15T18:00:00Z", column: "__debezium_unavailable_value"}
    raw = orjson.dumps(envelope("u", before=before, after=after))
    assert cfg.fast.outcome(raw, res) is None
    _agree(raw, cfg, res)


def test_unread_columns_are_not_parsed_so_an_overflowing_number_there_is_no_error() -> None:
    """The documented difference: a number beyond a double's range in a column slotguard never reads is
    an error for the reference path (orjson refuses the document) but not for the fast path, which
    invalidates the slot; invalid UTF-8 anywhere is an error for both."""
    res = resolver()
    good = orjson.dumps(envelope("c", after=appointment()))
    overflow = good.replace(b'"notes":"bring documents"', b'"notes":1e400')
    assert overflow != good
    with pytest.raises(MalformedChange):
        reference_outcome(overflow, DEFAULT, res)
    assert process_change(overflow, DEFAULT, res).keys == process_change(good, DEFAULT, res).keys
    bad_utf8 = good.replace(b"bring documents", b"bring \xff documents")
    with pytest.raises(MalformedChange, match="not JSON"):
        process_change(bad_utf8, DEFAULT, res)


def test_a_cancellation_whose_old_image_has_no_id_is_left_to_the_reference_path() -> None:
    """Found by the generated test: an update whose before image lacks the id frees keys but yields no
    event; the fast path steps aside instead of failing, and the reference path invalidates the keys."""
    assert DEFAULT.fast is not None
    raw = orjson.dumps(envelope("u", before=appointment(id=None), after=appointment(status="cancelled")))
    assert DEFAULT.fast.outcome(raw, resolver()) is None
    outcome = process_change(raw, DEFAULT, resolver())
    assert (outcome.records, len(outcome.keys)) == ((), 3)
