"""Errors the worker raises. Client-library errors (redis, psycopg, aiokafka) are wrapped into these at
the boundary, so the agent decides by category: a :class:`~schemas.errors.DependencyError` is retried,
an :class:`~schemas.errors.InputError` is dead-lettered."""

from __future__ import annotations

from schemas.errors import DependencyError, InputError

#: Longest reason kept from an exception's message: the first line, this many characters.
MAX_REASON_CHARS = 300


class RecordFailed(InputError):
    """Handling one record raised an exception that is not an :class:`InputError` (a library's
    ``ValueError``, ``RecursionError``, ``MemoryError``, a bug): the record is dead-lettered under the
    exception's class name (:attr:`error_class`) with its first line as the reason."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}" if reason else error_class)
        self.error_class = error_class

    @classmethod
    def of(cls, exc: BaseException) -> RecordFailed:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        return cls(type(exc).__name__, first[:MAX_REASON_CHARS])


class CrashLoop(InputError):
    """The worker died this many times in a row while handling this record (a crash nothing could catch:
    a segfault in a C extension, the kernel's OOM killer): on the next start it is dead-lettered."""

    def __init__(self, deaths: int) -> None:
        super().__init__(f"crashed the worker {deaths} times")


class RedisUnavailable(DependencyError):
    """Redis refused or dropped the connection, or timed out, while deleting cache keys."""


class ServiceLookupFailed(DependencyError):
    """The read-only Postgres lookup of a service / a company's event types failed."""


class PublishFailed(DependencyError):
    """Kafka did not acknowledge a derived event or a dead-letter record."""


class KafkaUnreachable(DependencyError):
    """No Kafka broker answered at the configured bootstrap servers when the worker started."""
