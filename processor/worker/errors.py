"""Errors the worker raises. Client-library errors (redis, psycopg, aiokafka) are wrapped into these at
the boundary, so the agent decides by category: a :class:`~schemas.errors.DependencyError` is retried,
an :class:`~schemas.errors.InputError` is dead-lettered."""

from __future__ import annotations

from schemas.errors import DependencyError


class RedisUnavailable(DependencyError):
    """Redis refused or dropped the connection, or timed out, while deleting cache keys."""


class ServiceLookupFailed(DependencyError):
    """The read-only Postgres lookup of a service / a company's event types failed."""


class PublishFailed(DependencyError):
    """Kafka did not acknowledge a derived event or a dead-letter record."""


class KafkaUnreachable(DependencyError):
    """No Kafka broker answered at the configured bootstrap servers when the worker started."""
