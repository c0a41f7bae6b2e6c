"""Event-type resolution: which Cal.com event type an appointment's service maps to.

The core only needs two synchronous lookups (:class:`EventTypeResolver`). The worker backs them with the
services feed (the ``services`` CDC topic read whole) plus cached Postgres answers it fetches before deriving
a batch (``processor.worker.resolution``), so the core itself never does I/O. :class:`InMemoryResolver` is
the plain implementation used by ``slotguard explain``, the tests and as the worker's local view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What the core needs to know about one service row (ids rendered as strings)."""

    service_id: str
    company_id: str | None
    event_type_id: str | None


class EventTypeResolver(Protocol):
    def service(self, service_id: str) -> ServiceInfo | None:
        """The service, or ``None`` when it is not known."""
        ...

    def event_types_of_company(self, company_id: str) -> Sequence[str] | None:
        """Every event type the company's services map to; ``None`` when unknown."""
        ...


class InMemoryResolver:
    """An :class:`EventTypeResolver` over a dict of services; ``put``/``remove`` keep it current."""

    def __init__(self, services: Iterable[ServiceInfo] = ()) -> None:
        self._services: dict[str, ServiceInfo] = {}
        # company -> event types, rebuilt lazily: writes are rare, reads are per change.
        self._by_company: dict[str, tuple[str, ...]] | None = None
        for info in services:
            self.put(info)

    def put(self, info: ServiceInfo) -> None:
        self._services[info.service_id] = info
        self._by_company = None

    def remove(self, service_id: str) -> None:
        if self._services.pop(service_id, None) is not None:
            self._by_company = None

    def service(self, service_id: str) -> ServiceInfo | None:
        return self._services.get(service_id)

    def event_types_of_company(self, company_id: str) -> Sequence[str] | None:
        if self._by_company is None:
            grouped: dict[str, set[str]] = {}
            for info in self._services.values():
                if info.company_id is not None and info.event_type_id is not None:
                    grouped.setdefault(info.company_id, set()).add(info.event_type_id)
            self._by_company = {company: tuple(sorted(types)) for company, types in grouped.items()}
        return self._by_company.get(company_id)

    def __len__(self) -> int:
        return len(self._services)
