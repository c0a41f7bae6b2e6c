"""Decoding message values: both JsonConverter layouts, the sample fixtures, tombstones, malformed input."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processor.core.decode import decode_envelope
from processor.core.derive import process_change
from processor.core.errors import MalformedChange
from schemas.errors import InputError
from tests.support.changes import appointment, config, envelope, resolver, run, with_schema

FIXTURES = Path(__file__).with_name("fixtures")
SEED_KEYS_14 = [
    "cal_slots_15_1_123_2025-10-15-13_2025-10-15-14",
    "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15",
    "cal_slots_15_1_123_2025-10-15-15_2025-10-15-16",
]

#: fixture -> (event types, number of keys, a warning substring or None)
EXPECTED = {
    "booked.json": (["booked"], 3, None),
    "booked_schema_enabled.json": (["booked"], 3, None),
    "booked_naive_micro_schema_enabled.json": (["booked"], 3, None),
    "rescheduled.json": (["rescheduled"], 5, None),
    "cancelled.json": (["cancelled"], 3, None),
    "soft_deleted.json": (["cancelled"], 3, None),
    "deleted.json": (["cancelled"], 3, None),
    "snapshot_read.json": ([], 0, None),
    "notes_changed.json": ([], 0, None),
    "tombstone.json": ([], 0, None),
    "update_without_before.json": ([], 3, "REPLICA IDENTITY FULL"),
    "toast_reschedule.json": (["rescheduled"], 5, None),
}


def test_every_fixture_has_an_expectation() -> None:
    """Each sample change event in tests/unit/fixtures is checked below."""
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_outcome(name: str) -> None:
    """Each sample change event yields its expected events, key count and warning."""
    types, key_count, warning = EXPECTED[name]
    outcome = run((FIXTURES / name).read_bytes())
    assert [e.type for e in outcome.events] == types
    assert len(outcome.keys) == key_count
    if warning is None:
        assert outcome.warnings == ()
    else:
        assert any(warning in w for w in outcome.warnings)


def test_schema_enabled_envelope_yields_the_same_as_the_bare_payload() -> None:
    """{"schema": ..., "payload": ...} and the bare payload give identical outcomes."""
    env = envelope(
        "u", before=appointment(), after=appointment(starts_at="2025-10-15T16:00:00Z", ends_at=None)
    )
    assert run(with_schema(env)) == run(env)


def test_naive_micro_fixture_keys_berlin_wall_time_with_source_zone() -> None:
    """The MicroTimestamp fixture holds 16:00 wall time; in source zone Berlin that is the seed's 14:00Z."""
    value = (FIXTURES / "booked_naive_micro_schema_enabled.json").read_bytes()
    assert run(value, config(source_timezone="Europe/Berlin")).keys == SEED_KEYS_14


def test_schema_enabled_tombstone_payload_is_a_tombstone() -> None:
    """{"schema": null, "payload": null} is treated like a null value."""
    assert decode_envelope(b'{"schema": null, "payload": null}') is None


def test_str_values_are_accepted_like_bytes() -> None:
    """process_change takes str as well as bytes."""
    env = envelope("c", after=appointment())
    assert process_change(orjson.dumps(env).decode(), config(), resolver()) == run(env)


def test_transaction_metadata_is_parsed() -> None:
    """The transaction block (provide.transaction.metadata) is read when present."""
    env = envelope("c", after=appointment())
    env["transaction"] = {"id": "789:23456", "total_order": 1, "data_collection_order": 1}
    decoded = decode_envelope(orjson.dumps(env))
    assert decoded is not None
    assert decoded.envelope.transaction is not None
    assert decoded.envelope.transaction.id == "789:23456"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (b'"text"', "expected an object"),
        (b"{}", "op"),
        (b'{"op": "x"}', "op"),
        (b'{"op": "c", "after": "row"}', "after"),
        (b'{"op": "c", "source": {"lsn": "abc"}}', "source.lsn"),
        (b'{"schema": {"type": 5}, "payload": {"op": "c"}}', "schema"),
    ],
)
def test_malformed_values_raise_a_one_line_malformed_change(value: bytes, message: str) -> None:
    """Bad JSON or a wrong shape is MalformedChange (an InputError) naming the problem on one line."""
    with pytest.raises(MalformedChange) as caught:
        run(value)
    assert isinstance(caught.value, InputError)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"starts_at": True}, "starts_at"),
        ({"starts_at": "soon"}, "starts_at"),
        ({"company_id": 1.5}, "company_id"),
        ({"status": 3}, "status"),
    ],
)
def test_wrongly_typed_columns_raise_malformed_change_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    """A column of the wrong kind is MalformedChange naming the logical field."""
    with pytest.raises(MalformedChange, match=field):
        run(envelope("c", after=appointment(**changes)))
