"""Dead-letter records: the original key/value bytes plus headers that name the error and the origin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

#: Header names, stable for consumers of the dead-letter topic.
H_ERROR = "slotguard.error"
H_ERROR_CLASS = "slotguard.error.class"
H_TOPIC = "slotguard.topic"
H_PARTITION = "slotguard.partition"
H_OFFSET = "slotguard.offset"
#: Set by ``slotguard replay --from-dlq`` on a re-fed dead letter ("<dlq>:<partition>:<offset>"); kept when
#: the record is dead-lettered again, so the next replay does not re-feed it (no loop).
H_REPLAYED_FROM = "slotguard.replayed-from"

#: Longest error message kept in a header; messages are one line, this only bounds pathological input.
MAX_ERROR_BYTES = 1024

Headers = Sequence[tuple[str, bytes]]


class Record(Protocol):
    """A consumed Kafka record as the worker reads it (the consumer's ``KafkaRecord``, a test's
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


def dead_letter_headers(record: Record, error: Exception) -> list[tuple[str, bytes]]:
    """The record's own headers followed by the ``slotguard.*`` headers describing ``error``."""
    message = str(error).replace("\n", " ").encode("utf-8", "replace")[:MAX_ERROR_BYTES]
    ours = [
        (H_ERROR, message),
        (H_ERROR_CLASS, type(error).__name__.encode()),
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
