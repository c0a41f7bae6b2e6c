"""The core's configuration: built once from plain values, frozen, never from the settings model.

The composition root (``slotguard.wiring``) reads ``Settings`` and calls :meth:`CoreConfig.build` with
explicit arguments; tests build one the same way. Everything that depends only on configuration -- time
zones, the key template, the status sets, the column mapping -- is compiled here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from processor.core.classify import StatusPolicy
from processor.core.decode import TypedDecoder
from processor.core.keys import DEFAULT_MAX_TENANT_ID_LENGTH, KeyTemplate, TenantGuard
from processor.core.window import HourWindow
from schemas.errors import ConfigError
from schemas.rows import AppointmentReader, ColumnMappingError, ServiceReader

UnknownEventTypePolicy = Literal["company", "skip"]

_UTC = ZoneInfo("UTC")


@dataclass(frozen=True)
class CoreConfig:
    """Everything the core needs, compiled (zones, template, status sets, column readers)."""

    appointments: AppointmentReader
    services: ServiceReader
    statuses: StatusPolicy
    window: HourWindow
    template: KeyTemplate
    guard: TenantGuard
    redis_key_prefix: str
    unknown_event_type: UnknownEventTypePolicy
    source_zone: tzinfo
    appointments_table: str = "appointments"
    #: The typed decoder of the column mapping (``None``: every change takes the tolerant decoder).
    typed: TypedDecoder | None = None

    @classmethod
    def build(
        cls,
        *,
        key_template: str,
        key_zone: tzinfo = _UTC,
        source_zone: tzinfo = _UTC,
        occupying_statuses: Iterable[str],
        non_occupying_statuses: Iterable[str],
        hours_before: int = 1,
        hours_after: int = 1,
        tenant_id_pattern: str | None = None,
        max_tenant_id_length: int = DEFAULT_MAX_TENANT_ID_LENGTH,
        redis_key_prefix: str = "",
        unknown_event_type: UnknownEventTypePolicy = "company",
        appointment_columns: Mapping[str, str] | None = None,
        service_columns: Mapping[str, str] | None = None,
        appointments_table: str = "appointments",
    ) -> CoreConfig:
        """Compile a configuration; raises :class:`~schemas.errors.ConfigError` naming what is unusable."""
        try:
            appointments = AppointmentReader(appointment_columns or {}, source_zone)
        except ColumnMappingError as exc:
            raise ConfigError(f"SLOTGUARD_APPOINTMENT_COLUMNS: {exc}") from None
        try:
            services = ServiceReader(service_columns or {})
        except ColumnMappingError as exc:
            raise ConfigError(f"SLOTGUARD_SERVICE_COLUMNS: {exc}") from None
        template = KeyTemplate(key_template, key_zone)
        statuses = StatusPolicy.of(frozenset(occupying_statuses), frozenset(non_occupying_statuses))
        window = HourWindow(key_zone, hours_before, hours_after)
        guard = TenantGuard(tenant_id_pattern, template.separators, max_tenant_id_length)
        return cls(
            appointments=appointments,
            services=services,
            statuses=statuses,
            window=window,
            template=template,
            guard=guard,
            redis_key_prefix=redis_key_prefix,
            unknown_event_type=unknown_event_type,
            source_zone=source_zone,
            appointments_table=appointments_table,
            typed=TypedDecoder.of(appointments.columns),
        )
