"""The entry points other packages call: service_ids_needed, decode_service_change, Outcome shape."""

from __future__ import annotations

import pytest

from processor.core.errors import MalformedChange
from processor.core.pipeline import ServiceChange, decode_service_change, service_ids_needed
from processor.core.resolver import InMemoryResolver, ServiceInfo
from tests.unit.changes import appointment, config, encode, envelope, run


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


def test_service_ids_needed_lists_both_images_services() -> None:
    """A service change needs the old and the new service."""
    value = encode(envelope("u", before=appointment(), after=appointment(service_id=8)))
    assert service_ids_needed(value, config()) == {"7", "8"}


@pytest.mark.parametrize("value", [None, b"null", b"{bad", encode(envelope("r", after=appointment()))])
def test_service_ids_needed_is_empty_for_tombstones_snapshots_and_malformed_values(
    value: bytes | None,
) -> None:
    """Nothing to pre-fetch; malformed input is left for process_change to report."""
    assert service_ids_needed(value, config()) == set()


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
