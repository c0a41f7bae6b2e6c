"""Kafka message value -> typed change (or ``None`` for a tombstone), raising :class:`MalformedChange`.

Both ``JsonConverter`` layouts are accepted: the bare envelope (``schemas.enable=false``) and
``{"schema": ..., "payload": ...}`` (``true``), whose schema also tells the unit of every timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from processor.core.errors import MalformedChange
from schemas.envelope import ChangeEnvelope, SchemaEnvelope, column_semantics

_NO_SEMANTICS: dict[str, str] = {}

# The models' validators, called directly: ``model_validate``'s keyword handling costs about a quarter of
# validating a whole envelope, and this runs once per message. Same validation, same errors.
_validate_bare = ChangeEnvelope.__pydantic_validator__.validate_python
_validate_wrapped = SchemaEnvelope.__pydantic_validator__.validate_python


@dataclass(frozen=True, slots=True)
class DecodedEnvelope:
    """A validated envelope plus the column -> Connect semantic name map (empty for bare payloads)."""

    envelope: ChangeEnvelope
    semantics: dict[str, str] = field(default_factory=dict)


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


def decode_envelope(value: bytes | str | None) -> DecodedEnvelope | None:
    """Decode a Debezium change event. ``None`` for a tombstone (null value, or a null schema payload)."""
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
