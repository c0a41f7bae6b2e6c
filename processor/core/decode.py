"""Kafka message value -> typed change (or ``None`` for a tombstone), raising :class:`MalformedChange`.

Both ``JsonConverter`` layouts are accepted: the bare envelope (``schemas.enable=false``) and
``{"schema": ..., "payload": ...}`` (``true``), whose schema also tells the unit of every timestamp.

Two decoders, one result. The typed decoder (msgspec, :class:`TypedDecoder`) reads the common change, a
bare envelope, in one C pass. Whatever it does not take -- a wrapped envelope, a value of a looser type
(``"123"`` for a number), anything it refuses, nesting past its recursion limit -- goes to the tolerant
decoder (orjson and the pydantic models of :mod:`schemas.envelope`), which accepts every shape the models
allow and words every error. Both envelopes have the same attributes, so everything after decoding --
rows, rules, keys, events -- is one code path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import orjson
from pydantic import ValidationError

from processor.core.errors import MalformedChange
from schemas.envelope import ChangeEnvelope, SchemaEnvelope, column_semantics
from schemas.rows import APPOINTMENT_FIELDS

#: A signed 64-bit integer: the tolerant decoder's orjson refuses larger numbers, and msgspec would not.
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class TypedSource(msgspec.Struct, frozen=True, gc=False):
    """``source``, as :class:`schemas.envelope.SourceInfo` reads it (stricter types: else tolerant)."""

    version: str | None = None
    connector: str | None = None
    name: str | None = None
    ts_ms: _Int | None = None
    snapshot: str | bool | None = None
    db: str | None = None
    schema_: str | None = msgspec.field(default=None, name="schema")
    table: str | None = None
    lsn: _Int | None = None
    tx_id: _Int | None = msgspec.field(default=None, name="txId")
    sequence: str | None = None
    # The pydantic model also takes its field names; their presence sends the change to the tolerant path.
    other_tx_id: Any = msgspec.field(default=msgspec.UNSET, name="tx_id")
    other_schema: Any = msgspec.field(default=msgspec.UNSET, name="schema_")


class _Transaction(msgspec.Struct, frozen=True, gc=False):
    id: str
    total_order: _Int | None = None
    data_collection_order: _Int | None = None


class TypedDecoder:
    """The typed decoder of one column mapping: a bare envelope whose row images are structs of the mapped
    columns only (the rest of an image is skipped, not built), in :data:`schemas.rows.APPOINTMENT_FIELDS`'
    order -- :meth:`schemas.rows.AppointmentReader.read_values` reads them."""

    def __init__(self, columns: Mapping[str, str]) -> None:
        row = msgspec.defstruct(
            "TypedRow",
            [(f, Any, None) for f in APPOINTMENT_FIELDS],
            rename=dict(columns),
            frozen=True,
            gc=False,
        )
        self.envelope = msgspec.defstruct(
            "TypedEnvelope",
            [
                ("op", Literal["c", "u", "d", "r", "t", "m"]),
                ("before", row | None, None),
                ("after", row | None, None),
                ("ts_ms", _Int | None, None),
                ("source", TypedSource | None, None),
                ("transaction", _Transaction | None, None),
                # A bare envelope that also has both keys is read as a wrapped one (by the tolerant path).
                ("schema", Any, msgspec.UNSET),
                ("payload", Any, msgspec.UNSET),
            ],
            frozen=True,
            gc=False,
        )
        self.decode = msgspec.json.Decoder(self.envelope).decode

    @classmethod
    def of(cls, columns: Mapping[str, str]) -> TypedDecoder | None:
        """The decoder, or ``None`` when the mapping cannot be one struct (two fields, one column)."""
        try:
            return cls(columns)
        except (TypeError, ValueError):
            return None


#: What the rest of the core reads: either decoder's envelope (the same attributes; a typed envelope's
#: images are structs of the mapped columns, a tolerant one's are dicts).
Envelope = Any


_NO_SEMANTICS: dict[str, str] = {}

# The models' validators, called directly: ``model_validate``'s keyword handling costs about a quarter of
# validating a whole envelope, and this runs once per message. Same validation, same errors.
_validate_bare = ChangeEnvelope.__pydantic_validator__.validate_python
_validate_wrapped = SchemaEnvelope.__pydantic_validator__.validate_python


@dataclass(frozen=True, slots=True)
class DecodedEnvelope:
    """A validated envelope plus the column -> Connect semantic name map (empty for bare payloads)."""

    envelope: Envelope
    semantics: dict[str, str] = field(default_factory=dict)
    #: Whether the typed decoder read it: its row images are then structs of the mapped columns.
    typed: bool = False


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "value"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def load_json(value: bytes | str | None) -> Any:
    """Parse a message value; ``None`` (no value) parses as JSON ``null``."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedChange(f"not JSON: {exc}") from None


def may_repeat_keys(value: bytes | str, tokens: tuple[bytes, ...], images: int) -> bool:
    """Whether a row image of ``value`` may name an id column twice (cheap; :func:`reject_duplicate_keys`
    is the exact check). A column's name stands once per row image in a bare envelope; more often, or any
    ``\\u`` escape (which can spell a name without its letters), and the exact check decides."""
    raw = value.encode() if isinstance(value, str) else value
    if b"\\u" in raw:
        return True
    for token in tokens:  # noqa: SIM110 -- a loop, not any() over a generator: this runs per change
        if raw.count(token) > images:
            return True
    return False


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise MalformedChange(
            f"not a Debezium change event: the key {repeated[:64]!r} stands twice in one object"
        )
    return out


def reject_duplicate_keys(value: bytes | str) -> None:
    """Raise :class:`MalformedChange` when an object of ``value`` has a key twice: parsers disagree on
    which one counts (orjson and msgspec keep the last, others the first), so a tenant id could be read
    two ways. Slow (the standard library's parser); only for values :func:`may_repeat_keys` flags."""
    try:
        json.loads(value, object_pairs_hook=_unique_pairs)
    except RecursionError:
        raise MalformedChange("not JSON: nested too deep") from None
    except ValueError as exc:  # orjson accepted it; the standard library is stricter on nothing we need
        raise MalformedChange(f"not JSON: {str(exc).splitlines()[0][:200]}") from None


def _typed(value: bytes | str, decoder: TypedDecoder) -> Any:
    """The typed decoder: the envelope, or ``None`` when the tolerant decoder must decide."""
    if type(value) is bytes and not value.isascii():
        try:
            value.decode()  # orjson refuses invalid UTF-8 anywhere; msgspec checks only what it reads
        except UnicodeDecodeError:
            return None
    try:
        env: Any = decoder.decode(value)
    except (msgspec.DecodeError, RecursionError):
        # RecursionError: msgspec skips an unread field by recursing, as deep as it nests.
        return None
    if env.schema is not msgspec.UNSET and env.payload is not msgspec.UNSET:
        return None
    source = env.source
    if source is None or source.lsn is None:
        return None  # the event id then hashes the images: the tolerant decoder's JSON values
    if source.other_tx_id is not msgspec.UNSET or source.other_schema is not msgspec.UNSET:
        return None
    return env


def decode_envelope(value: bytes | str | None, typed: TypedDecoder | None = None) -> DecodedEnvelope | None:
    """Decode a Debezium change event. ``None`` for a tombstone (null value, or a null schema payload)."""
    if value is None:
        return None
    env = _typed(value, typed) if typed is not None else None
    if env is not None:
        return DecodedEnvelope(env, _NO_SEMANTICS, typed=True)
    data = load_json(value)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise MalformedChange(
            f"not a Debezium change event: a JSON {type(data).__name__}, expected an object"
        )
    try:
        if "payload" in data and "schema" in data:
            wrapped: SchemaEnvelope = _validate_wrapped(data)
            if wrapped.payload is None:
                return None
            return DecodedEnvelope(wrapped.payload, column_semantics(wrapped.schema_))
        return DecodedEnvelope(_validate_bare(data), _NO_SEMANTICS)
    except ValidationError as exc:
        raise MalformedChange(f"not a Debezium change event: {_one_line(exc)}") from None
