"""Dead-letter records: the original key/value bytes plus headers that name the error and the origin."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from processor.worker.errors import RecordFailed

#: Header names, stable for consumers of the dead-letter topic.
H_ERROR = "slotguard.error"
H_ERROR_CLASS = "slotguard.error.class"
H_TOPIC = "slotguard.topic"
H_PARTITION = "slotguard.partition"
H_OFFSET = "slotguard.offset"
#: Set by ``slotguard replay --from-dlq`` on a re-fed dead letter ("<dlq>:<partition>:<offset>"); kept when
#: the record is dead-lettered again, so the next replay does not re-feed it (no loop).
H_REPLAYED_FROM = "slotguard.replayed-from"

#: Set on a dead letter too large for Kafka: what was cut ("key", "value", "headers", comma-separated), and
#: the original value's size in bytes and SHA-256 (hex).
H_TRUNCATED = "slotguard.truncated"
H_ORIGINAL_SIZE = "slotguard.original-size"
H_ORIGINAL_SHA256 = "slotguard.original-sha256"

#: Longest error message kept in a header; messages are one line, this only bounds pathological input.
MAX_ERROR_BYTES = 1024
#: Bytes of a record Kafka counts beside its key, value and headers (record and batch framing), rounded up.
RECORD_OVERHEAD = 512
#: Longest key kept on a truncated dead letter.
MAX_TRUNCATED_KEY = 1024

Headers = Sequence[tuple[str, bytes]]


class Record(Protocol):
    """A consumed Kafka record as the worker reads it (aiokafka's ``ConsumerRecord``, a test's
    :class:`SourceRecord`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A consumed Kafka record, as much of it as the worker needs (bytes untouched)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


def error_class(error: Exception) -> str:
    """The class a dead letter names: the original exception's for a :class:`RecordFailed`."""
    return error.error_class if isinstance(error, RecordFailed) else type(error).__name__


def dead_letter_headers(record: Record, error: Exception) -> list[tuple[str, bytes]]:
    """The record's own headers followed by the ``slotguard.*`` headers describing ``error``."""
    message = str(error).replace("\n", " ").encode("utf-8", "replace")[:MAX_ERROR_BYTES]
    ours = [
        (H_ERROR, message),
        (H_ERROR_CLASS, error_class(error).encode()),
        (H_TOPIC, record.topic.encode()),
        (H_PARTITION, str(record.partition).encode()),
        (H_OFFSET, str(record.offset).encode()),
    ]
    # Drop any slotguard.* headers the record already carried (a record re-driven from the DLQ), except
    # the replay marker: a replayed record that fails again stays marked as replayed.
    kept = [
        (str(k), bytes(v or b""))
        for k, v in record.headers or ()
        if not k.startswith("slotguard.") or k == H_REPLAYED_FROM
    ]
    return kept + ours


def _size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers) + RECORD_OVERHEAD


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], max_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The dead letter as sent: unchanged when Kafka takes ``max_bytes``; else cut to fit -- the record's
    own headers dropped, the key to :data:`MAX_TRUNCATED_KEY` bytes, the value to what is left -- with
    headers naming what was cut and the original value's size and SHA-256. A record Kafka refuses would
    be retried forever and hold its partition."""
    if _size(key, value, headers) <= max_bytes:
        return key, value, headers
    cut: list[str] = []
    ours = [(k, v) for k, v in headers if k.startswith("slotguard.")]
    if len(ours) < len(headers):
        cut.append("headers")
    if key is not None and len(key) > MAX_TRUNCATED_KEY:
        key = key[:MAX_TRUNCATED_KEY]
        cut.append("key")
    original = value or b""
    marks = [
        (H_TRUNCATED, b""),  # filled in below; counted now
        (H_ORIGINAL_SIZE, str(len(original)).encode()),
        (H_ORIGINAL_SHA256, hashlib.sha256(original).hexdigest().encode()),
    ]
    room = max_bytes - _size(key, b"", [*ours, *marks]) - len(b"headers,key,value")
    if value is not None and len(value) > room:
        value = value[: max(0, room)]
        cut.append("value")
    marks[0] = (H_TRUNCATED, ",".join(cut).encode())
    return key, value, [*ours, *marks]
