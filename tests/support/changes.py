"""Builders for Debezium change events used by the core's unit tests."""

from __future__ import annotations

from typing import Any

import orjson

from processor.core.config import CoreConfig
from processor.core.derive import process_change
from processor.core.outcome import Outcome
from processor.core.resolver import InMemoryResolver, ServiceInfo
from slotguard.settings import Settings
from slotguard.wiring import core_config

#: Services of the seed's examples: service 7 of company 15 is Cal.com event type 123.
SERVICES = (
    ServiceInfo("7", "15", "123"),
    ServiceInfo("8", "15", "124"),
    ServiceInfo("9", "20", "123"),
    ServiceInfo("10", "15", None),
)


def resolver() -> InMemoryResolver:
    return InMemoryResolver(SERVICES)


def appointment(**changes: Any) -> dict[str, Any]:
    """An ``appointments`` row image as Debezium writes it (timestamptz as ZonedTimestamp strings)."""
    row: dict[str, Any] = {
        "id": 42,
        "company_id": 15,
        "branch_id": 1,
        "service_id": 7,
        "customer_id": 99,
        "starts_at": "2025-10-15T14:00:00Z",
        "ends_at": "2025-10-15T15:00:00Z",
        "status": "scheduled",
        "notes": "bring documents",
        "calcom_booking_id": "cb-1",
        "source": "retell",
        "deleted_at": None,
        "created_at": "2025-10-14T10:00:00.123456Z",
        "updated_at": "2025-10-14T10:00:00.123456Z",
    }
    row.update(changes)
    return row


def envelope(
    op: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    lsn: int | None = 23456,
    tx_id: int | None = 789,
    table: str = "appointments",
    snapshot: str = "false",
    ts_ms: int = 1760536800000,
) -> dict[str, Any]:
    """A Debezium change event (JsonConverter, bare payload) -- the one builder of the test suite.

    ``ts_ms`` is the commit time (``source.ts_ms``); the envelope's own ``ts_ms`` is 123 ms later."""
    return {
        "before": before,
        "after": after,
        "source": {
            "version": "2.7.3.Final",
            "connector": "postgresql",
            "name": "slotguard",
            "ts_ms": ts_ms,
            "snapshot": snapshot,
            "db": "app",
            "sequence": '[null,"23456"]',
            "schema": "public",
            "table": table,
            "txId": tx_id,
            "lsn": lsn,
            "xmin": None,
        },
        "op": op,
        "ts_ms": ts_ms + 123,
        "transaction": None,
    }


def encode(value: dict[str, Any] | None) -> bytes:
    return orjson.dumps(value)


_CONNECT_TYPES = {int: "int64", str: "string", bool: "boolean", float: "double"}


def with_schema(env: dict[str, Any], semantics: dict[str, str] | None = None) -> dict[str, Any]:
    """``env`` as JsonConverter writes it with ``schemas.enable=true``; ``semantics`` names column types."""
    semantics = semantics or {}
    image = env["after"] or env["before"] or {}
    fields = []
    for column, value in image.items():
        name = semantics.get(column)
        field: dict[str, Any] = {
            "type": _CONNECT_TYPES.get(type(value), "string"),
            "optional": column != "id",
            "field": column,
        }
        if name:
            field["name"] = name
            field["version"] = 1
        fields.append(field)
    value_schema = {
        "type": "struct",
        "fields": fields,
        "optional": True,
        "name": "slotguard.public.appointments.Value",
    }
    schema = {
        "type": "struct",
        "fields": [
            {**value_schema, "field": "before"},
            {**value_schema, "field": "after"},
            {
                "type": "struct",
                "fields": [
                    {"type": "string", "optional": False, "field": "version"},
                    {"type": "int64", "optional": True, "field": "lsn"},
                    {"type": "int64", "optional": True, "field": "txId"},
                ],
                "optional": False,
                "name": "io.debezium.connector.postgresql.Source",
                "field": "source",
            },
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
        "optional": False,
        "name": "slotguard.public.appointments.Envelope",
        "version": 2,
    }
    return {"schema": schema, "payload": env}


def config(**settings: Any) -> CoreConfig:
    """A core configuration from explicit settings (environment variables do not leak in)."""
    return core_config(Settings(**settings))


def run(value: dict[str, Any] | bytes | None, cfg: CoreConfig | None = None, res: Any = None) -> Outcome:
    raw = value if isinstance(value, bytes) or value is None else encode(value)
    return process_change(raw, cfg or config(), res if res is not None else resolver())


def keys_of(company: int, branch: int | str, event_type: int, *hours: str) -> list[str]:
    """Seed-format keys for hour buckets given as ``YYYY-MM-DD-HH>YYYY-MM-DD-HH`` pairs."""
    out = []
    for pair in hours:
        start, end = pair.split(">")
        out.append(f"cal_slots_{company}_{branch}_{event_type}_{start}_{end}")
    return out
