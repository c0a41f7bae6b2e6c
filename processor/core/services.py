"""Changes of the ``services`` table: how the worker learns which event type each service maps to."""

from __future__ import annotations

from dataclasses import dataclass

from processor.core.config import CoreConfig
from processor.core.decode import decode_envelope
from processor.core.errors import MalformedChange
from processor.core.resolver import ServiceInfo
from schemas.rows import RowError


@dataclass(frozen=True, slots=True)
class ServiceChange:
    """A change of a service row: ``info`` is ``None`` when the row was deleted."""

    service_id: str
    info: ServiceInfo | None


def decode_service_change(value: bytes | str | None, config: CoreConfig) -> ServiceChange | None:
    """Decode a change of the ``services`` table (its CDC topic); ``None`` for tombstones, truncates and
    messages. Snapshot reads count: they are how the worker learns the existing services."""
    decoded = decode_envelope(value)
    if decoded is None:
        return None
    env = decoded.envelope
    try:
        if env.op in ("c", "u", "r") and env.after is not None:
            row = config.services.read(env.after)
            if row.id is None:
                raise MalformedChange(f"services row without id (column {config.services.columns['id']!r})")
            return ServiceChange(row.id, ServiceInfo(row.id, row.company_id, row.calcom_event_type_id))
        if env.op == "d" and env.before is not None:
            row = config.services.read(env.before)
            if row.id is None:
                raise MalformedChange(
                    f"services delete without id (column {config.services.columns['id']!r})"
                )
            return ServiceChange(row.id, None)
    except RowError as exc:
        raise MalformedChange(f"services row: {exc}") from None
    return None
