"""Event-type resolution and the unknown-event-type policy."""

from __future__ import annotations

from processor.core.resolver import InMemoryResolver, ServiceInfo
from tests.support.changes import appointment, config, envelope, resolver, run


def test_unknown_service_with_company_policy_invalidates_every_event_type_of_the_company() -> None:
    """Service 99 is unknown: keys for event types 123 and 124 of company 15, and a warning saying so."""
    outcome = run(envelope("c", after=appointment(service_id=99)))
    assert outcome.events[0].event_type_id is None
    assert {k.split("_")[4] for k in outcome.keys} == {"123", "124"}
    assert len(outcome.keys) == 6
    assert any("invalidating all 2 event type(s) of company 15" in w for w in outcome.warnings)


def test_service_without_event_type_uses_the_company_fallback() -> None:
    """Service 10 has no calcom_event_type_id: same fallback as an unknown service."""
    outcome = run(envelope("c", after=appointment(service_id=10)))
    assert {k.split("_")[4] for k in outcome.keys} == {"123", "124"}


def test_null_service_uses_the_company_fallback() -> None:
    """An appointment without a service still invalidates the company's event types."""
    outcome = run(envelope("c", after=appointment(service_id=None)))
    assert len(outcome.keys) == 6


def test_company_with_unknown_event_types_yields_no_keys_and_a_warning() -> None:
    """Fallback for company 30, whose event types are unknown: no keys, a warning."""
    outcome = run(envelope("c", after=appointment(company_id=30, service_id=99)))
    assert outcome.keys == []
    assert any("event types of company 30 are unknown" in w for w in outcome.warnings)
    assert [e.type for e in outcome.events] == ["booked"]


def test_company_with_empty_event_types_yields_no_keys() -> None:
    """A resolver returning an empty list counts as unknown."""

    class Empty(InMemoryResolver):
        def event_types_of_company(self, company_id: str) -> list[str]:
            return []

    outcome = run(envelope("c", after=appointment(service_id=99)), res=Empty())
    assert outcome.keys == []
    assert outcome.warnings


def test_skip_policy_never_uses_the_company_fallback() -> None:
    """unknown_event_type=skip: unknown event type -> no keys, a warning naming the policy."""
    outcome = run(envelope("c", after=appointment(service_id=99)), config(unknown_event_type="skip"))
    assert outcome.keys == []
    assert any("policy: skip" in w for w in outcome.warnings)


def test_service_of_another_company_keeps_keys_in_the_appointments_company() -> None:
    """Service 9 belongs to company 20; appointment of company 15 keys company 15 and warns."""
    outcome = run(envelope("c", after=appointment(service_id=9)))
    assert all(k.startswith("cal_slots_15_1_123_") for k in outcome.keys)
    assert any("belongs to company 20" in w for w in outcome.warnings)


def test_service_change_resolves_old_and_new_event_types() -> None:
    """Rescheduling from service 7 to 8 invalidates event type 123 (old) and 124 (new)."""
    outcome = run(envelope("u", before=appointment(), after=appointment(service_id=8)))
    (event,) = outcome.events
    assert (event.old_event_type_id, event.event_type_id) == ("123", "124")  # type: ignore[union-attr]
    assert {k.split("_")[4] for k in outcome.keys} == {"123", "124"}


def test_cancellation_resolves_the_old_service() -> None:
    """A cancellation carries the event type of the service it freed."""
    outcome = run(envelope("d", before=appointment(service_id=8)))
    assert outcome.events[0].event_type_id == "124"


def test_in_memory_resolver_put_and_remove_update_company_lists() -> None:
    """put/remove keep event_types_of_company current."""
    res = resolver()
    res.put(ServiceInfo("11", "15", "125"))
    assert res.event_types_of_company("15") == ("123", "124", "125")
    res.remove("11")
    res.remove("7")
    assert res.event_types_of_company("15") == ("124",)
    assert res.service("7") is None
    assert res.event_types_of_company("99") is None
