"""Kafka message value -> typed change (or ``None`` for a tombstone), raising :class:`MalformedChange`.

Both ``JsonConverter`` layouts are accepted: the bare envelope (``schemas.enable=false``) and
``{"schema": ..., "payload": ...}`` (``true``), whose schema also tells the unit of every timestamp.
"""

from __future__ import annotations

import json
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


def may_repeat_keys(value: bytes | str, tokens: tuple[bytes, ...], images: int) -> bool:
    """Whether a row image of ``value`` may name a column twice (cheap; :func:`reject_duplicate_keys` is
    the exact check). A column's name stands once per row image in a bare envelope; more often, or any
    ``\\u`` escape (which can spell a name without its letters), and the exact check decides."""
    raw = value.encode() if isinstance(value, str) else value
    if b"\\u" in raw:
        return True
    return any(raw.count(token) > images for token in tokens)


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
