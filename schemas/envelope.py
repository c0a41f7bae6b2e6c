"""The Debezium change-event envelope as Kafka Connect's ``JsonConverter`` writes it.

With ``value.converter.schemas.enable=false`` the message value is the bare :class:`ChangeEnvelope`; with
``true`` it is a :class:`SchemaEnvelope` ``{"schema": ..., "payload": <ChangeEnvelope>}`` whose schema
names each column's semantic type (``io.debezium.time.MicroTimestamp`` ...), which
:func:`column_semantics` extracts. A null value (Kafka tombstone, written after a delete) is not an
envelope at all; the decoder recognises it before these models are involved.

Row images (``before``/``after``) stay plain mappings here: their columns depend on the deployment and
are read through the configurable column mapping in :mod:`schemas.rows`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

#: c = create, u = update, d = delete, r = snapshot read, t = truncate, m = logical decoding message.
Op = Literal["c", "u", "d", "r", "t", "m"]


def _row_image(value: object) -> dict[str, Any] | None:
    # A row image is an object or null. Its values are checked column by column when a row model reads
    # it, so pydantic is not asked to rebuild the dict (that alone cost a third of the envelope's decode).
    if value is None or isinstance(value, dict):
        return value
    raise ValueError(f"row image must be an object or null, got {type(value).__name__}")


#: ``before``/``after``: a row image (column -> JSON value) or null.
RowImage = Annotated[
    dict[str, Any] | None, PlainValidator(_row_image, json_schema_input_type=dict[str, Any] | None)
]


class SourceInfo(BaseModel):
    """Debezium's ``source`` block (Postgres connector); unknown extra fields are ignored."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    version: str | None = None
    connector: str | None = None
    name: str | None = None
    ts_ms: int | None = None
    snapshot: str | bool | None = None
    db: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    table: str | None = None
    lsn: int | None = None
    tx_id: int | None = Field(default=None, alias="txId")
    sequence: str | None = None

    @property
    def is_snapshot(self) -> bool:
        # "true", "first", "last", "first_in_data_collection", "incremental", ...; "false" or absent = streaming.
        return self.snapshot not in (None, False, "false")


class TransactionBlock(BaseModel):
    """Debezium's ``transaction`` block (present when ``provide.transaction.metadata`` is on)."""

    model_config = ConfigDict(frozen=True)

    id: str
    total_order: int | None = None
    data_collection_order: int | None = None


class ChangeEnvelope(BaseModel):
    """One row change: the ``payload`` of a Debezium data-change event."""

    model_config = ConfigDict(frozen=True)

    before: RowImage = None
    after: RowImage = None
    op: Op
    ts_ms: int | None = None
    source: SourceInfo | None = None
    transaction: TransactionBlock | None = None


class ConnectSchema(BaseModel):
    """A Kafka Connect schema node as ``JsonConverter`` writes it (``schemas.enable=true``)."""

    model_config = ConfigDict(frozen=True)

    type: str
    optional: bool = False
    field: str | None = None
    name: str | None = None
    version: int | None = None
    fields: list[ConnectSchema] | None = None
    parameters: dict[str, str] | None = None


class SchemaEnvelope(BaseModel):
    """``{"schema": ..., "payload": ...}``: a change event written with ``schemas.enable=true``."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    schema_: ConnectSchema | None = Field(alias="schema")
    payload: ChangeEnvelope | None


def column_semantics(schema: ConnectSchema | None) -> dict[str, str]:
    """Column -> Connect semantic type name (only columns that have one), read from the ``before``/``after``
    struct schemas of an envelope schema."""
    found: dict[str, str] = {}
    if schema is None or not schema.fields:
        return found
    for image in schema.fields:
        if image.field in ("before", "after") and image.fields:
            for column in image.fields:
                if column.field is not None and column.name is not None:
                    found[column.field] = column.name
    return found
