"""The entry points other packages call: read_change -> derive, companies_needed, decode_service_change."""

from __future__ import annotations

import pytest

from processor.core.derive import companies_needed, derive
from processor.core.errors import MalformedChange
from processor.core.read import read_change
from processor.core.resolver import InMemoryResolver, ServiceInfo
from processor.core.services import ServiceChange, decode_service_change
from tests.support.changes import appointment, config, encode, envelope, run


def _service(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": 7,
        "company_id": 15,
        "branch_id": None,
        "name": "Haircut",
        "calcom_event_type_id": 123,
        "duration_minutes": 60,
    }
    row.update(changes)
    return row


def test_a_read_change_names_the_services_of_both_images() -> None:
    """A reschedule to another service needs the old and the new service."""
    read = read_change(encode(envelope("u", before=appointment(), after=appointment(service_id=8))), config())
    assert read.service_ids == {"7", "8"}


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"null",
        encode(envelope("r", after=appointment())),
        encode(envelope("u", before=appointment(), after=appointment(notes="x"))),
    ],
)
def test_tombstones_snapshots_and_noise_updates_need_nothing_and_derive_nothing(value: bytes | None) -> None:
    """Nothing to look up, nothing to invalidate."""
    read = read_change(value, config())
    assert read.service_ids == frozenset()
    assert derive(read, config(), InMemoryResolver()).redis_keys == []


def test_malformed_input_is_reported_by_the_read_step() -> None:
    """The read step raises the typed error; nothing is half-read."""
    with pytest.raises(MalformedChange):
        read_change(b"{bad", config())


def test_companies_are_needed_only_for_rows_whose_service_gives_no_event_type() -> None:
    """With the service known, no company lookup; unknown, its company's event types are needed."""
    read = read_change(encode(envelope("c", after=appointment())), config())
    known = InMemoryResolver([ServiceInfo("7", "15", "123")])
    assert companies_needed(read, config(), known) == frozenset()
    assert companies_needed(read, config(), InMemoryResolver()) == {"15"}
    assert companies_needed(read, config(unknown_event_type="skip"), InMemoryResolver()) == frozenset()


def test_derive_after_read_equals_the_one_call_path() -> None:
    """read_change + derive is what process_change does."""
    value = encode(
        envelope(
            "u",
            before=appointment(),
            after=appointment(starts_at="2025-10-15T16:00:00Z", ends_at="2025-10-15T17:00:00Z"),
        )
    )
    res = InMemoryResolver([ServiceInfo("7", "15", "123")])
    assert derive(read_change(value, config()), config(), res) == run(value, config(), res)


def test_service_insert_decodes_to_service_info() -> None:
    """A services insert yields the service's company and event type."""
    change = decode_service_change(encode(envelope("c", after=_service(), table="services")), config())
    assert change == ServiceChange("7", ServiceInfo("7", "15", "123"))


def test_service_snapshot_read_counts() -> None:
    """Snapshot reads of services populate the worker's view."""
    change = decode_service_change(encode(envelope("r", after=_service(calcom_event_type_id=None))), config())
    assert change == ServiceChange("7", ServiceInfo("7", "15", None))


def test_service_delete_decodes_to_none_info() -> None:
    """A deleted service is ServiceChange(id, None)."""
    assert decode_service_change(encode(envelope("d", before=_service())), config()) == ServiceChange(
        "7", None
    )


@pytest.mark.parametrize("value", [None, b"null", encode(envelope("t"))])
def test_service_tombstones_and_truncates_decode_to_none(value: bytes | None) -> None:
    """Tombstones and truncate events carry no service."""
    assert decode_service_change(value, config()) is None


def test_service_column_mapping() -> None:
    """service_columns maps calcom_event_type_id to a differently named column."""
    row = _service()
    row["event_type"] = row.pop("calcom_event_type_id")
    cfg = config(service_columns={"calcom_event_type_id": "event_type"})
    change = decode_service_change(encode(envelope("u", before=row, after=row)), cfg)
    assert change == ServiceChange("7", ServiceInfo("7", "15", "123"))


def test_service_row_without_id_is_malformed() -> None:
    """A service image without its id cannot update the resolver."""
    with pytest.raises(MalformedChange):
        decode_service_change(encode(envelope("c", after=_service(id=None))), config())


def test_outcome_keys_are_sorted_and_unique() -> None:
    """keys is sorted and has no duplicates even when old and new windows overlap."""
    later = appointment(starts_at="2025-10-15T15:00:00Z", ends_at="2025-10-15T16:00:00Z")
    outcome = run(envelope("u", before=appointment(), after=later))
    assert outcome.keys == sorted(set(outcome.keys))
    assert len(outcome.keys) == 4


def test_outcome_counts_windows_without_an_event_type_for_metrics() -> None:
    """A reschedule between two services without an event type counts two unresolved windows."""
    res = InMemoryResolver([ServiceInfo("70", "15", None), ServiceInfo("80", "15", None)])
    before = appointment(service_id=70)
    after = appointment(service_id=80, starts_at="2025-10-15T16:00:00Z", ends_at="2025-10-15T17:00:00Z")
    assert run(envelope("u", before, after), res=res).unresolved_event_types == 2


def test_outcome_counts_no_unresolved_window_when_the_event_type_is_known() -> None:
    assert run(envelope("c", None, appointment())).unresolved_event_types == 0


def test_outcome_carries_the_op_and_commit_time_even_when_nothing_is_invalidated() -> None:
    """The worker labels metrics from the outcome, so a snapshot read still reports its op and time."""
    outcome = run(envelope("r", None, appointment()))
    assert (outcome.op, outcome.source_ts_ms, outcome.keys) == ("r", 1760536800000, [])


def test_a_tombstone_has_no_op() -> None:
    assert run(None).op is None
