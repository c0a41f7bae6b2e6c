"""The fast path's msgspec structs: the parts of an envelope it decodes, and the events it encodes.

They live apart from :mod:`processor.core.fastpath` because that module is compiled by mypyc, and a struct
class defined in compiled code gets its annotations as the wrong types (``source.version`` decoded as a
``type``); here, interpreted, msgspec reads them as written. Every struct is made in C, so nothing is lost
by defining them in Python.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

UNSET: Final = msgspec.UNSET
#: A signed 64-bit integer: orjson (the reference path) refuses numbers beyond 64 bits, so here they
#: fail to decode and the reference path decides (msgspec cannot bound past int64).
Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Source(msgspec.Struct, gc=False):
    """``source``, typed as strictly as :class:`schemas.envelope.SourceInfo` (stricter is fine: a value
    the struct refuses goes to the reference path)."""

    version: str | None = None
    connector: str | None = None
    name: str | None = None
    ts_ms: Int | None = None
    snapshot: str | bool | None = None
    db: str | None = None
    schema: str | None = None
    table: str | None = None
    lsn: Int | None = None
    txId: Int | None = None
    sequence: str | None = None
    # The pydantic model also accepts its field names; their presence sends the change to the reference.
    tx_id: Any = UNSET
    schema_: Any = UNSET


class Transaction(msgspec.Struct, gc=False):
    id: str
    total_order: Int | None = None
    data_collection_order: Int | None = None


# --- events: the same bytes as the models' to_json (field order as declared) ----------------------------
# Structs encoded by msgspec, not dicts given to orjson: a struct is made in C from its arguments, where a
# ten-key dict literal and its serialisation cost about twice as many instructions (callgrind).


class SourceJson(msgspec.Struct, gc=False):
    lsn: int | None
    txId: int | None
    ts_ms: int | None
    db: str | None
    table: str | None
    op: str


class EventJson(msgspec.Struct, gc=False):
    """The fields every event starts with; each kind's own follow (a struct's fields: base first)."""

    type: str
    event_id: str
    appointment_id: str | None
    company_id: str | None
    branch_id: str | None
    service_id: str | None
    event_type_id: str
    status: str | None
    source: SourceJson


class BookedJson(EventJson, gc=False):
    new_window: msgspec.Raw


class RescheduledJson(EventJson, gc=False):
    old_company_id: str | None
    old_branch_id: str | None
    old_service_id: str | None
    old_event_type_id: str
    old_window: msgspec.Raw
    new_window: msgspec.Raw
    changed: list[str]


class CancelledJson(EventJson, gc=False):
    reason: str
    old_window: msgspec.Raw


encode = msgspec.json.Encoder().encode
