"""Errors the core raises. All are :class:`~schemas.errors.InputError`: the change cannot be processed
as it is (the worker sends it to the dead-letter topic, ``slotguard explain`` prints one line)."""

from __future__ import annotations

from schemas.errors import ConfigError, InputError


class MalformedChange(InputError):
    """The Kafka message value is not a Debezium change event we can read (bad JSON, wrong shape, bad type)."""


class UnsafeKeyPart(InputError):
    """A tenant id (company, branch, event type) would break the cache key or widen a Redis pattern."""


class KeyTemplateError(ConfigError):
    """``SLOTGUARD_KEY_TEMPLATE`` (or a column mapping) cannot be used."""
